"""slack_message: post a message to a Slack incoming webhook."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from app.connectors.base import ActionResult, Connector, Credential, check_string, check_url, rendered_url
from app.errors import ValidationFailed

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient


class SlackMessage(Connector):
    action_type = "slack_message"
    required = ("webhook_url", "text")
    optional = ("channel", "username", "blocks")

    def check(self, config: Mapping[str, Any]) -> None:
        check_url(config, "webhook_url")
        for key in ("text", "channel", "username"):
            check_string(config, key)
        if "blocks" in config and not isinstance(config["blocks"], list):
            raise ValidationFailed("config.blocks must be a list of Slack blocks", field="config.blocks")

    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        message = {key: config[key] for key in ("text", "channel", "username", "blocks") if config.get(key)}
        # Slack answers 429 with Retry-After when rate limited: the client reports it as retryable.
        response = client.send("POST", rendered_url(config, "webhook_url"), token=token,
                               headers={"Content-Type": "application/json"},
                               data=json.dumps(message).encode())
        return ActionResult.of(response)

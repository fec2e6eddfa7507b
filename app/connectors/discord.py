"""discord_message: execute a Discord webhook (https://discord.com/developers/docs/resources/webhook).

Config: `webhook_url`, `content` and/or `embeds` (a list of embed objects, at most 10), optional `username`.
When rate limited Discord answers 429 with a JSON body whose `retry_after` gives the seconds to wait
(fractional, more precise than its Retry-After header): the retry waits exactly that."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from app.connectors.base import ActionError, ActionResult, Connector, Credential, check_string, check_url, rendered_url
from app.errors import ValidationFailed

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient

MAX_EMBEDS = 10
FIELDS = ("content", "embeds", "username")


def discord_retry_after(error: ActionError) -> float | None:
    """The `retry_after` seconds of a Discord 429 body, if it has one."""
    try:
        value = json.loads(error.body or "").get("retry_after")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


class DiscordMessage(Connector):
    action_type = "discord_message"
    required = ("webhook_url",)
    optional = FIELDS

    def check(self, config: Mapping[str, Any]) -> None:
        check_url(config, "webhook_url")
        for key in ("content", "username"):
            check_string(config, key)
        if "content" not in config and "embeds" not in config:
            raise ValidationFailed("discord_message needs config.content or config.embeds", field="config.content")
        embeds = config.get("embeds", [])
        if not isinstance(embeds, list) or len(embeds) > MAX_EMBEDS or not all(isinstance(e, dict) for e in embeds):
            raise ValidationFailed(f"config.embeds must be a list of at most {MAX_EMBEDS} embed objects",
                                   field="config.embeds")

    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        message = {key: config[key] for key in FIELDS if config.get(key)}
        try:
            response = client.send("POST", rendered_url(config, "webhook_url"), token=token,
                                   headers={"Content-Type": "application/json"}, data=json.dumps(message).encode())
        except ActionError as error:
            if error.status_code == 429 and (seconds := discord_retry_after(error)) is not None:
                error.retry_after = seconds
            raise
        return ActionResult(response.status_code, response.body)

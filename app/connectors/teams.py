"""teams_message: post to a Microsoft Teams Workflows webhook (Power Automate "When a Teams webhook request
is received").

Microsoft retired the Office 365 connectors (incoming webhooks taking MessageCard JSON) in 2024-2025;
their replacement, the Workflows webhook, takes a message whose `attachments` hold an Adaptive Card:
`{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"content": <card>}]}`. Config: `webhook_url` and either `text` (sent as a card with one wrapped
TextBlock) or `card` (an Adaptive Card object, `"type": "AdaptiveCard"`, sent as it is)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from app.connectors.base import ActionResult, Connector, Credential, check_string, check_url, rendered_url
from app.errors import ValidationFailed

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"  # what Teams renders in channels and chats


def text_card(text: str) -> dict[str, Any]:
    return {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": CARD_VERSION, "body": [{"type": "TextBlock", "text": text, "wrap": True}]}


def teams_payload(card: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": card}]}


class TeamsMessage(Connector):
    action_type = "teams_message"
    required = ("webhook_url",)
    optional = ("text", "card")

    def check(self, config: Mapping[str, Any]) -> None:
        check_url(config, "webhook_url")
        if ("text" in config) == ("card" in config):
            raise ValidationFailed("teams_message needs exactly one of config.text or config.card",
                                   field="config.text")
        check_string(config, "text")
        card = config.get("card", {"type": "AdaptiveCard"})
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            raise ValidationFailed('config.card must be an Adaptive Card object ("type": "AdaptiveCard")',
                                   field="config.card")

    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        card = config["card"] if "card" in config else text_card(config["text"])
        response = client.send("POST", rendered_url(config, "webhook_url"), token=token,
                               headers={"Content-Type": "application/json"},
                               data=json.dumps(teams_payload(card)).encode())
        return ActionResult(response.status_code, response.body)

"""The connector registry: one entry per action type. Adding a connector takes one module and one
line in CONNECTORS."""
from __future__ import annotations

from typing import Any

from app import rendering
from app.connectors.base import ActionError, ActionResult, Connector, Credential
from app.connectors.discord import DiscordMessage
from app.connectors.email import Email
from app.connectors.http import HttpRequest
from app.connectors.slack import SlackMessage
from app.connectors.teams import TeamsMessage
from app.errors import ValidationFailed

__all__ = ["ActionError", "ActionResult", "CONNECTORS", "Connector", "Credential", "action_types", "get", "validate"]

CONNECTORS: dict[str, Connector] = {
    connector.action_type: connector
    for connector in (
        SlackMessage(),
        HttpRequest(),
        Email(),
        DiscordMessage(),
        TeamsMessage(),
    )
}


def action_types() -> list[str]:
    """The action types a workflow may use."""
    return sorted(CONNECTORS)


def get(action_type: Any) -> Connector:
    """Return the connector for `action_type`; ValidationFailed (field action_type) if none."""
    connector = CONNECTORS.get(action_type) if isinstance(action_type, str) else None
    if connector is None:
        raise ValidationFailed(f"action_type must be one of {', '.join(action_types())}, got {action_type!r}",
                               field="action_type")
    return connector


def validate(action_type: Any, config: Any) -> None:
    """Raise ValidationFailed naming the field unless `config` is valid for `action_type`,
    templates included (a syntax error names its path, such as config.body.user)."""
    connector = get(action_type)
    if not isinstance(config, dict):
        raise ValidationFailed(f"config must be an object, got {type(config).__name__}", field="config")
    connector.validate(config)
    rendering.check_all(config, "config")

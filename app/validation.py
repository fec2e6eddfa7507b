"""Validation of request bodies: every failure is a 422 that names the offending field."""
from __future__ import annotations

from typing import Any

from app import schedules
from app.errors import BadRequest, ValidationFailed
from app.models import ExecutionStatus, TriggerType
from app.security.signatures import AUTO, SCHEMES, STANDARD, whsec_key
from app.security.signatures.standard import KEY_BYTES, WHSEC_PREFIX

NAME_MAX = 200
SECRET_MAX = 512
WORKFLOW_FIELDS = {"name", "trigger_type", "action_type", "config", "steps", "enabled", "secret", "signature_scheme",
                   "schedule"}
# Clients often GET a workflow, edit it and PUT it back: fields the server owns are ignored, not refused.
READ_ONLY_FIELDS = {"id", "created_at", "updated_at", "webhook_url", "has_secret", "next_run_at"}
LIMIT_MAX = 200


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed(f"body must be a JSON object, got {type(body).__name__}", field="body")
    return body


def workflow_fields(body: Any, *, partial: bool) -> dict[str, Any]:
    """Return the validated workflow fields present in `body`; all but enabled/secret unless partial."""
    body = require_object(body)
    unknown = sorted(set(body) - WORKFLOW_FIELDS - READ_ONLY_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]!r}", field=unknown[0])
    fields = {key: body[key] for key in WORKFLOW_FIELDS if key in body}
    if "steps" in fields:  # the null action_type and config of a workflow of several steps, sent back
        fields = {key: value for key, value in fields.items() if key not in ("action_type", "config")
                  or value is not None}
    if not partial:
        for key in ("name", "trigger_type") if "steps" in fields else ("name", "trigger_type", "action_type",
                                                                          "config"):
            if key not in fields:
                raise ValidationFailed(f"{key} is required", field=key)
    if "name" in fields:
        fields["name"] = _name(fields["name"])
    if "trigger_type" in fields:
        fields["trigger_type"] = _choice("trigger_type", fields["trigger_type"], [t.value for t in TriggerType])
    if "enabled" in fields and not isinstance(fields["enabled"], bool):
        raise ValidationFailed("enabled must be true or false", field="enabled")
    if "secret" in fields:
        fields["secret"] = _secret(fields["secret"])
    if "signature_scheme" in fields:
        fields["signature_scheme"] = _choice("signature_scheme", fields["signature_scheme"], [AUTO, *SCHEMES])
    if "action_type" in fields and not isinstance(fields["action_type"], str):
        raise ValidationFailed("action_type must be a string", field="action_type")
    if "config" in fields and not isinstance(fields["config"], dict):
        raise ValidationFailed("config must be a JSON object", field="config")
    if fields.get("schedule") is not None:
        fields["schedule"] = schedules.parse(fields["schedule"]).as_json()
    return fields


def check_trigger(trigger_type: str, schedule: dict[str, Any] | None) -> None:
    """A schedule goes with trigger_type schedule, and only with it."""
    if trigger_type == TriggerType.SCHEDULE.value and schedule is None:
        raise ValidationFailed("schedule is required when trigger_type is schedule", field="schedule")
    if trigger_type != TriggerType.SCHEDULE.value and schedule is not None:
        raise ValidationFailed(f"schedule is only for trigger_type schedule, not {trigger_type}", field="schedule")


def check_secret_for_scheme(secret: str | None, scheme: str) -> None:
    """Under `auto` and `standard` a `whsec_` secret is Standard Webhooks' base64 key, which must be
    24 to 64 bytes (a short key is guessable); other schemes key with the text as it is."""
    if secret is None or scheme not in (AUTO, STANDARD) or not secret.startswith(WHSEC_PREFIX):
        return
    key = whsec_key(secret)
    low, high = KEY_BYTES
    if key is None or not low <= len(key) <= high:
        raise ValidationFailed(f"secret: a {WHSEC_PREFIX} secret must be the base64 of a {low} to {high} byte key "
                               f"(Standard Webhooks) under signature_scheme {scheme}", field="secret")


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationFailed("name must be a string", field="name")
    value = value.strip()
    if not 1 <= len(value) <= NAME_MAX:
        raise ValidationFailed(f"name must be 1 to {NAME_MAX} characters, got {len(value)}", field="name")
    return value


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= SECRET_MAX:
        raise ValidationFailed(f"secret must be a string of 1 to {SECRET_MAX} characters, or null", field="secret")
    if value != value.strip():
        # Almost always a copied newline: the sender signs without it, so every webhook would get 401.
        raise ValidationFailed("secret must not start or end with whitespace", field="secret")
    return value


def _choice(field: str, value: Any, allowed: list[str]) -> str:
    if value not in allowed:
        raise ValidationFailed(f"{field} must be one of {', '.join(allowed)}, got {value!r}", field=field)
    return value


def query_arg(args: Any, name: str) -> str | None:
    """A query argument, None when absent; one that is sent empty (`?status=`) is a 422 naming it,
    not "no filter": the caller meant something by it."""
    value = args.get(name)
    if value is not None and not value.strip():
        raise ValidationFailed(f"{name} must not be empty: leave it out for no {name}", field=name)
    return value


def page_args(args: Any) -> tuple[int, str | None]:
    """Read ?limit= (1..200, default 50) and ?cursor= from query arguments."""
    raw = query_arg(args, "limit") or "50"
    try:
        limit = int(raw)
    except ValueError:
        raise ValidationFailed(f"limit must be an integer from 1 to {LIMIT_MAX}, got {raw!r}", field="limit") from None
    if not 1 <= limit <= LIMIT_MAX:
        raise ValidationFailed(f"limit must be an integer from 1 to {LIMIT_MAX}, got {limit}", field="limit")
    return limit, query_arg(args, "cursor")


def status_arg(value: str | None) -> ExecutionStatus | None:
    if value is None:
        return None
    return ExecutionStatus(_choice("status", value, [s.value for s in ExecutionStatus]))


def wait_arg(value: str | None) -> float | None:
    """Read ?wait=SECONDS (0 < wait <= 30)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValidationFailed(f"wait must be a number of seconds up to 30, got {value!r}", field="wait") from None
    if not 0 < seconds <= 30:
        raise ValidationFailed(f"wait must be more than 0 and at most 30 seconds, got {value!r}", field="wait")
    return seconds


def bad_json(error: Exception) -> BadRequest:
    return BadRequest(f"body is not valid JSON: {error}")

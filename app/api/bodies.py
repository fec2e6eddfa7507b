"""Reading request bodies: API bodies are JSON; webhook bodies may be JSON, form or text."""
from __future__ import annotations

import json
from typing import Any

from flask import request

from app.errors import BadRequest

_MISSING = object()


def json_body(default: Any = _MISSING) -> Any:
    """Parse the body as JSON whatever the Content-Type says; an empty body gives `default` if set."""
    raw = request.get_data(cache=True)
    if not raw.strip() and default is not _MISSING:
        return default
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def webhook_payload(raw: bytes) -> Any:
    """Decode a webhook body by its Content-Type: JSON, form fields, or text."""
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {key: values[0] if len(values) == 1 else values for key, values in request.form.lists()}
    return raw.decode("utf-8", errors="replace")

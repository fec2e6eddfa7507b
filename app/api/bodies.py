"""Reading request bodies: API bodies are JSON; webhook bodies may be JSON, form or text."""
from __future__ import annotations

import json
import math
from typing import Any

from flask import request

from app.errors import BadRequest

_MISSING = object()
# JSON nesting a body may have: far beyond real payloads, far below what json and the store can
# recurse through (deeper input used to escape as a RecursionError, a 500).
MAX_DEPTH = 100


def parse_json(raw: bytes) -> Any:
    """Parse a body as strict JSON (RFC 8259: no NaN or Infinity, which the API could not send back
    as JSON), at most MAX_DEPTH levels deep; BadRequest (400) otherwise."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"body nests JSON deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if _deeper_than(value, MAX_DEPTH):
        raise BadRequest(f"body nests JSON deeper than {MAX_DEPTH} levels")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (iterative: no recursion limit)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_body(default: Any = _MISSING) -> Any:
    """Parse the body as JSON whatever the Content-Type says; an empty body gives `default` if set."""
    raw = request.get_data(cache=True)
    if not raw.strip() and default is not _MISSING:
        return default
    return parse_json(raw)


def webhook_payload(raw: bytes) -> Any:
    """Decode a webhook body by its Content-Type: JSON, form fields, or text."""
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        if not raw.strip():
            return None
        return parse_json(raw)
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {key: values[0] if len(values) == 1 else values for key, values in request.form.lists()}
    return raw.decode("utf-8", errors="replace")

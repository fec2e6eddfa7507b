"""Reading request bodies: API bodies are JSON; webhook bodies may be JSON, form or text.

A webhook body becomes the payload its sender meant: a leading byte-order mark is dropped whatever
the type, a `charset` parameter is honoured (UTF-8 without one), and a form whose only field is
`payload` holding JSON (GitHub's form option, Slack interactivity) is that JSON."""
from __future__ import annotations

import codecs
import io
import json
import math
import re
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

from flask import request
from werkzeug.formparser import FormDataParser

from app.errors import BadRequest, UnsupportedMediaType

_MISSING = object()
# JSON nesting a body may have: far beyond real payloads, far below what json and the store can
# recurse through (deeper input used to escape as a RecursionError, a 500).
MAX_DEPTH = 100
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# json.loads turns a paired escape (\ud83d\ude00) into one character, so any surrogate left is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(raw: bytes | str) -> Any:
    """Parse a body as strict JSON (RFC 8259: no NaN or Infinity, which the API could not send back
    as JSON, no unpaired surrogate escape, which no UTF-8 text can hold), at most MAX_DEPTH levels
    deep; BadRequest (400) otherwise, naming where the bad string is."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"body nests JSON deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    problem = _tree_problem(value, MAX_DEPTH)
    if problem:
        raise BadRequest(problem)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def _tree_problem(value: Any, limit: int) -> str | None:
    """Say what is wrong with a parsed JSON value: nesting deeper than `limit`, or a string (key or
    value) holding an unpaired surrogate; None if nothing. Iterative: no recursion limit."""
    stack = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return f"body is not valid JSON: the string at {path} holds an unpaired surrogate escape"
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return f"body nests JSON deeper than {limit} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"body is not valid JSON: a key in {path} holds an unpaired surrogate escape"
                stack.append((child, depth + 1, f"{path}.{key}"))
        else:
            stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))
    return None


def json_body(default: Any = _MISSING) -> Any:
    """Parse the body as JSON whatever the Content-Type says; an empty body gives `default` if set."""
    raw = request.get_data(cache=True)
    if not raw.strip() and default is not _MISSING:
        return default
    return parse_json(raw)


def webhook_payload(raw: bytes, mimetype: str, params: Mapping[str, str]) -> Any:
    """Decode a webhook body (already content-decoded) by its media type and parameters: JSON, form
    fields (a repeated field gives a list), or text. UnsupportedMediaType for an unknown charset."""
    charset = params.get("charset")
    if mimetype == "application/json" or mimetype.endswith("+json"):
        if not raw.strip():
            return None
        # Without a charset json.loads finds UTF-8/16/32 itself and skips a UTF-8 byte-order mark.
        return parse_json(raw if charset is None else _text(raw, charset, "strict"))
    if mimetype in FORM_TYPES:
        fields = _form_fields(raw, mimetype, params, charset)
        return _json_in_payload_field(fields)
    return _text(raw, charset, "replace")


def _text(raw: bytes, charset: str | None, errors: str) -> str:
    """Decode with `charset` (UTF-8 if None) and drop a leading byte-order mark."""
    try:
        codec = codecs.lookup(charset or "utf-8")
    except LookupError:
        raise UnsupportedMediaType(f"charset {charset!r} is not supported") from None
    try:
        return raw.decode(codec.name, errors).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid {codec.name}: {exc.reason} at byte {exc.start}") from None


def _form_fields(raw: bytes, mimetype: str, params: Mapping[str, str], charset: str | None) -> dict[str, Any]:
    if mimetype == "multipart/form-data":
        # Werkzeug decodes each part by its own charset parameter; file parts are not payload fields.
        _, form, _ = FormDataParser().parse(io.BytesIO(raw), mimetype, len(raw), dict(params))
        return collapse(form.lists())
    text = _text(raw, charset, "replace")
    return collapse(_grouped(parse_qsl(text, keep_blank_values=True, encoding=charset or "utf-8",
                                       errors="replace")))


def _grouped(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return list(grouped.items())


def collapse(lists: Iterable[tuple[str, list[str]]]) -> dict[str, Any]:
    """Return {key: value} for keys given once and {key: [values...]} for repeated ones."""
    return {key: values[0] if len(values) == 1 else values for key, values in lists}


def _json_in_payload_field(fields: dict[str, Any]) -> Any:
    """A form whose only field is `payload` holding valid JSON is that JSON; anything else stays the form."""
    if list(fields) != ["payload"] or not isinstance(fields["payload"], str):
        return fields
    try:
        return parse_json(fields["payload"])
    except BadRequest:
        return fields

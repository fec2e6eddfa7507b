"""Credential types: what `data` each holds, checked at save time, and which of its values are secret.

- `smtp`: `host`, `port` (1-65535), `security` (`starttls` | `tls` | `none`), `from`, optional `username` and
  `password` (given: the connector logs in, whatever the security).
- `http_header`: `name`, `value`: one header added to every request of the step (e.g. `X-Api-Key`).
- `http_basic`: `username`, `password`: an `Authorization: Basic` header added the same way.
Errors name the field as `data.<key>`; they never echo a value."""
from __future__ import annotations

import base64
import re
from typing import Any

from app.errors import ValidationFailed

SECURITY = ("starttls", "tls", "none")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
NAME_MAX = 200
VALUE_MAX = 4096

# type -> (required keys, optional keys)
TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "smtp": (("host", "port", "security", "from"), ("username", "password")),
    "http_header": (("name", "value"), ()),
    "http_basic": (("username", "password"), ()),
}
# type -> the keys whose values are secret: never shown, redacted wherever they appear
SECRET_KEYS: dict[str, tuple[str, ...]] = {"smtp": ("password",), "http_header": ("value",), "http_basic": ("password",)}


def _string(data: dict[str, Any], key: str, *, allow_empty: bool = False) -> None:
    value = data[key]
    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > VALUE_MAX:
        raise ValidationFailed(f"data.{key} must be a string of 1 to {VALUE_MAX} characters", field=f"data.{key}")
    if "\r" in value or "\n" in value:
        raise ValidationFailed(f"data.{key} must be on one line", field=f"data.{key}")


def check_data(kind: str, data: Any) -> dict[str, Any]:
    """Return `data` if it suits credential type `kind`; ValidationFailed naming the field otherwise."""
    if not isinstance(data, dict):
        raise ValidationFailed("data must be an object", field="data")
    required, optional = TYPES[kind]
    for key in required:
        if key not in data:
            raise ValidationFailed(f"data.{key} is required for a {kind} credential", field=f"data.{key}")
    for key in data:
        if key not in required and key not in optional:
            raise ValidationFailed(f"data.{key} is not a field of a {kind} credential", field=f"data.{key}")
    for key in data:
        if key != "port":
            _string(data, key)
    if kind == "smtp":
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationFailed("data.port must be an integer from 1 to 65535", field="data.port")
        if data["security"] not in SECURITY:
            raise ValidationFailed(f"data.security must be one of {', '.join(SECURITY)}", field="data.security")
        if "@" not in data["from"]:
            raise ValidationFailed("data.from must be an email address", field="data.from")
        if ("username" in data) != ("password" in data):
            missing = "password" if "username" in data else "username"
            raise ValidationFailed(f"data.{missing} is required with data.username and data.password",
                                   field=f"data.{missing}")
    if kind == "http_header" and not _TOKEN.match(data["name"]):
        raise ValidationFailed("data.name must be an HTTP header name", field="data.name")
    return data


def basic_authorization(data: dict[str, Any]) -> str:
    """The Authorization header value of an http_basic credential."""
    raw = f"{data['username']}:{data['password']}".encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def secret_values(kind: str, data: dict[str, Any]) -> list[str]:
    """The strings of a credential that must never be shown: redacted from results, errors and logs."""
    values = [data[key] for key in SECRET_KEYS[kind] if data.get(key)]
    if kind == "http_basic":
        values.append(basic_authorization(data).split(" ", 1)[1])
    return values

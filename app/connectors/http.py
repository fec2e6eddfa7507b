"""http_request: send an HTTP request; a JSON body (object, list, or a string that parses as JSON)
goes out as application/json."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from app.connectors.base import ActionError, ActionResult, Connector, Credential, check_url, rendered_url
from app.credentials import basic_authorization
from app.errors import ValidationFailed

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_TIMEOUT = 60.0
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """Return the bytes to send and their content type."""
    if body is None:
        return None, None
    if not isinstance(body, str):
        return json.dumps(body).encode(), JSON
    try:
        json.loads(body)
    except ValueError:
        return body.encode(), TEXT
    return body.encode(), JSON


def credential_header(credential: Credential | None) -> dict[str, str]:
    """The header an http_header or http_basic credential adds, at send time only (never stored)."""
    if credential is None:
        return {}
    if credential.type == "http_basic":
        return {"Authorization": basic_authorization(dict(credential.data))}
    return {credential.data["name"]: credential.data["value"]}


class HttpRequest(Connector):
    action_type = "http_request"
    required = ("url",)
    optional = ("method", "headers", "body", "timeout")
    credential_types = ("http_header", "http_basic")

    def check(self, config: Mapping[str, Any]) -> None:
        check_url(config, "url")
        method = config.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ValidationFailed(f"config.method must be one of {', '.join(METHODS)}, got {method!r}",
                                   field="config.method")
        headers = config.get("headers", {})
        if not isinstance(headers, dict):
            raise ValidationFailed("config.headers must be an object of strings", field="config.headers")
        for name, value in headers.items():
            if not isinstance(value, str):
                raise ValidationFailed(f"config.headers.{name} must be a string, got {type(value).__name__}",
                                       field=f"config.headers.{name}")
        timeout = config.get("timeout", 1.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
            raise ValidationFailed(f"config.timeout must be a number of seconds above 0 and at most "
                                   f"{MAX_TIMEOUT:g}, got {timeout!r}", field="config.timeout")

    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        headers = dict(config.get("headers") or {})
        for name, value in headers.items():
            # Rendered from a payload, a value could smuggle in extra header lines.
            if "\r" in value or "\n" in value:
                raise ActionError(f"header {name} contains a line break after rendering")
        data, content_type = encode_body(config.get("body"))
        if content_type and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = content_type
        secret_headers = credential_header(credential)
        headers.update(secret_headers)
        response = client.send(config.get("method", "POST").upper(), rendered_url(config, "url"), token=token,
                               headers=headers, data=data, timeout=config.get("timeout"), sensitive=secret_headers)
        return ActionResult.of(response)

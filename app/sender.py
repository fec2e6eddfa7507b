"""A sender's tool: post a test event to a workflow's webhook, signed as Standard Webhooks signs it.

Used by `flask --app wsgi webhooks send`; it talks to a running service over HTTP with `requests`,
like any sender would, and never touches the store."""
from __future__ import annotations

import json
import secrets
import time
from typing import Callable

import requests

from app.security.signatures import sign_standard

TIMEOUT = 35.0  # seconds: above the longest ?wait= a caller might add to the URL


def event_body(data: str | None, file_bytes: bytes | None) -> bytes:
    """The body to send: --data (which must be JSON), --file as it is, or `{}`. ValueError if --data is not JSON."""
    if file_bytes is not None:
        return file_bytes
    if data is None:
        return b"{}"
    try:
        json.loads(data)
    except ValueError as exc:
        raise ValueError(f"--data must be JSON: {exc}") from None
    return data.encode()


def signed_headers(secret: str, body: bytes, *, now: Callable[[], float] = time.time) -> dict[str, str]:
    """Standard Webhooks headers for `body`: a fresh `webhook-id` (which the service also takes as the
    idempotency key), the timestamp and the v1 signature (a `whsec_` secret is base64-decoded to the key)."""
    msg_id = f"msg_{secrets.token_hex(12)}"
    timestamp = int(now())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_standard(secret, msg_id, timestamp, body)}


def send_event(base_url: str, workflow_id: str, body: bytes, *, secret: str | None = None,
               content_type: str = "application/json", session: requests.Session | None = None) -> requests.Response:
    """POST `body` to BASE/api/webhooks/WORKFLOW_ID; raise requests.RequestException if nothing answered."""
    headers = {"Content-Type": content_type, **(signed_headers(secret, body) if secret else {})}
    url = f"{base_url.rstrip('/')}/api/webhooks/{workflow_id}"
    return (session or requests).post(url, data=body, headers=headers, timeout=TIMEOUT)

"""Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:ts:body">` with `X-Slack-Request-Timestamp`,
keyed with the signing secret's UTF-8 bytes (api.slack.com/authentication/verifying-requests-from-slack;
slack_sdk's SignatureVerifier does the same)."""
from __future__ import annotations

from collections.abc import Mapping

from app.security.signatures._common import SignatureError, check_fresh, hex_bytes, hmac_sha256, match_any

NAME = "slack"
HEADER = "x-slack-signature"
TIMESTAMP = "x-slack-request-timestamp"


def _digest(secret: str, timestamp: str, body: bytes) -> bytes:
    return hmac_sha256(secret.encode(), f"v0:{timestamp}:".encode() + body)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return an `X-Slack-Signature` header value for a sender."""
    return "v0=" + _digest(secret, str(timestamp), body).hex()


def verify(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    timestamp = h.get(TIMESTAMP)
    check_fresh(timestamp, now, tolerance)
    version, sep, value = h.get(HEADER, "").partition("=")
    digest = hex_bytes(value)
    if not sep or version != "v0" or digest is None:
        raise SignatureError("malformed signature header")
    match_any([digest], _digest(secret, timestamp, body), parsed=True)

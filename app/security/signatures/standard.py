"""Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp`, `webhook-signature`
= space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; a `whsec_` secret is the base64
of the key (24 to 64 bytes), any other secret is keyed with its UTF-8 bytes."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from app.security.signatures._common import SignatureError, check_fresh, hmac_sha256, match_any

NAME = "standard"
HEADER = "webhook-signature"
WHSEC_PREFIX = "whsec_"
KEY_BYTES = (24, 64)


def whsec_key(secret: str) -> bytes | None:
    """The key a `whsec_<base64>` secret holds; None if `secret` is not of that form."""
    if not secret.startswith(WHSEC_PREFIX) or len(secret) == len(WHSEC_PREFIX):
        return None
    try:
        return base64.b64decode(secret[len(WHSEC_PREFIX):], validate=True)
    except binascii.Error:
        return None


def _key(secret: str) -> bytes:
    key = whsec_key(secret)
    # A stored whsec_ secret that is not base64 (saved before the check at save time) keeps its
    # text as the key, the rule for any other string.
    return secret.encode() if key is None else key


def _digest(secret: str, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac_sha256(_key(secret), f"{msg_id}.{timestamp}.".encode() + body)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a `webhook-signature` header value (`v1,<base64>`) for a sender."""
    return "v1," + base64.b64encode(_digest(secret, msg_id, str(timestamp), body)).decode("ascii")


def verify(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    """Check timestamp freshness, then accept if any `v1` entry matches."""
    msg_id, timestamp, header = h.get("webhook-id"), h.get("webhook-timestamp"), h.get(HEADER)
    if not msg_id or not timestamp or not header:
        raise SignatureError("missing signature")
    check_fresh(timestamp, now, tolerance)
    candidates, parsed = [], False
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or not version:
            continue  # tolerate junk entries: acceptance still needs an HMAC match
        parsed = True
        if version != "v1":
            continue  # v1a (asymmetric) and future versions are not ours to check
        try:
            candidates.append(base64.b64decode(value.encode(), validate=True))
        except (binascii.Error, ValueError):
            continue
    match_any(candidates, _digest(secret, msg_id, timestamp, body), parsed=parsed)

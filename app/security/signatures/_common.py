"""What every signature scheme shares: the error, timestamp freshness, HMAC-SHA256."""
from __future__ import annotations

import hashlib
import hmac

from app.errors import Unauthorized


class SignatureError(Unauthorized):
    """Refuse a webhook whose signature does not verify; the message is a fixed, secret-free reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def check_fresh(timestamp: str | None, now: float, tolerance: float) -> None:
    """Refuse a missing, malformed or stale Unix timestamp (seconds) header value."""
    if not timestamp:
        raise SignatureError("missing signature")
    # Strict ASCII digits: int() would also take "+1", " 1", "1_0" or non-ASCII digits,
    # which the sender never signed in that spelling.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
        raise SignatureError("malformed timestamp")
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError("timestamp outside tolerance")


def match_any(candidates: list[bytes], expected: bytes, *, parsed: bool) -> None:
    """Accept if any candidate equals `expected`, comparing every one in constant time without
    short-circuiting, so timing says nothing about which matched."""
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise SignatureError("no matching signature" if parsed else "malformed signature header")


def hex_bytes(value: str) -> bytes | None:
    """Decode a 64-digit hex SHA-256 digest; None if it is not one."""
    if len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None

"""GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed with the secret's UTF-8
bytes (docs.github.com, "Validating webhook deliveries"). It signs the body alone: a captured
request can be replayed unchanged at any time (the delivery id makes the replay run nothing)."""
from __future__ import annotations

from collections.abc import Mapping

from app.security.signatures._common import SignatureError, hex_bytes, hmac_sha256, match_any

NAME = "github"
HEADER = "x-hub-signature-256"


def sign(secret: str, body: bytes) -> str:
    """Return an `X-Hub-Signature-256` header value (`sha256=<hex>`) for a sender."""
    return "sha256=" + hmac_sha256(secret.encode(), body).hex()


def verify(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    prefix, sep, value = h.get(HEADER, "").partition("=")
    digest = hex_bytes(value)
    if not sep or prefix != "sha256" or digest is None:
        raise SignatureError("malformed signature header")
    match_any([digest], hmac_sha256(secret.encode(), body), parsed=True)

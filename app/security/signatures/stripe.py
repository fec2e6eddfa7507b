"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]`, each v1 the HMAC-SHA256 of
`t.body` keyed with the whole endpoint secret string, `whsec_` prefix included, nothing decoded
(docs.stripe.com/webhooks#verify-manually; the stripe package's WebhookSignature does the same).
Several v1 entries appear while a secret is rolled; v0 (test mode, SHA-1 era) is not checked."""
from __future__ import annotations

from collections.abc import Mapping

from app.security.signatures._common import SignatureError, check_fresh, hex_bytes, hmac_sha256, match_any

NAME = "stripe"
HEADER = "stripe-signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return a `Stripe-Signature` header value for a sender."""
    return f"t={timestamp},v1=" + hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body).hex()


def verify(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    timestamp, candidates, parsed = None, [], False
    for item in h.get(HEADER, "").split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value
        elif key == "v1":
            parsed = True
            digest = hex_bytes(value)
            if digest is not None:
                candidates.append(digest)
    if timestamp is None or not parsed:
        raise SignatureError("malformed signature header")
    check_fresh(timestamp, now, tolerance)
    match_any(candidates, hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body), parsed=True)

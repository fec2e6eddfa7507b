"""Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`, keyed with the app's client
secret (shopify.dev, "Verify webhooks"). No timestamp: the webhook id makes a replay run nothing."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from app.security.signatures._common import SignatureError, hmac_sha256, match_any

NAME = "shopify"
HEADER = "x-shopify-hmac-sha256"


def sign(secret: str, body: bytes) -> str:
    """Return an `X-Shopify-Hmac-Sha256` header value for a sender."""
    return base64.b64encode(hmac_sha256(secret.encode(), body)).decode("ascii")


def verify(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    try:
        digest = base64.b64decode(h.get(HEADER, ""), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed signature header") from None
    if len(digest) != 32:
        raise SignatureError("malformed signature header")
    match_any([digest], hmac_sha256(secret.encode(), body), parsed=True)

"""Verify inbound webhook signatures (Standard Webhooks and GitHub); stdlib only, no flask."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

from app.errors import Unauthorized

STANDARD = "standard-webhooks"
GITHUB = "github"
_WHSEC_PREFIX = "whsec_"
_GITHUB_HEX = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Unauthorized):
    """Refuse a webhook whose signature does not verify; the message is a fixed, secret-free reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _standard_key(secret: str) -> bytes:
    """Return the HMAC key for Standard Webhooks: decoded bytes for `whsec_<base64>`, else UTF-8."""
    if secret.startswith(_WHSEC_PREFIX) and len(secret) > len(_WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(_WHSEC_PREFIX):], validate=True)
        except binascii.Error:
            pass  # not of the whsec_<base64> form, so the rule for any other string applies
    return secret.encode()


def _standard_digest(secret: str, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """Return the raw HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(_standard_key(secret), content, hashlib.sha256).digest()


def _github_digest(secret: str, body: bytes) -> bytes:
    """Return the raw HMAC-SHA256 of the body keyed with the secret's UTF-8 bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return a `webhook-signature` header value (`v1,<base64>`) for a sender."""
    digest = _standard_digest(secret, msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_github(secret: str, body: bytes) -> str:
    """Return an `X-Hub-Signature-256` header value (`sha256=<hex>`) for a sender."""
    return "sha256=" + _github_digest(secret, body).hex()


def _verify_standard(secret: str, body: bytes, h: Mapping[str, str], now: float, tolerance: float) -> None:
    """Check timestamp freshness, then accept if any `v1` entry matches."""
    msg_id, timestamp, header = h.get("webhook-id"), h.get("webhook-timestamp"), h["webhook-signature"]
    if not msg_id or not timestamp or not header:
        raise SignatureError("missing signature")
    # Strict ASCII digits: int() would also take "+1", " 1", "1_0" or non-ASCII digits,
    # which the sender never signed in that spelling.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
        raise SignatureError("malformed timestamp")
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError("timestamp outside tolerance")
    expected = _standard_digest(secret, msg_id, timestamp, body)
    parsed = matched = False
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or not version:
            continue  # tolerate junk entries: acceptance still needs an HMAC match
        parsed = True
        if version != "v1":
            continue  # v1a (asymmetric) and future versions are not ours to check
        try:
            candidate = base64.b64decode(value.encode(), validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare every candidate without short-circuiting, so timing says nothing about which matched.
        matched |= hmac.compare_digest(candidate, expected)
    if matched:
        return
    raise SignatureError("no matching signature" if parsed else "malformed signature header")


def _verify_github(secret: str, body: bytes, header: str) -> None:
    """Accept if the `sha256=<hex>` header matches the body's HMAC."""
    prefix, sep, value = header.partition("=")
    if not sep or prefix != "sha256" or not _GITHUB_HEX.fullmatch(value):
        raise SignatureError("malformed signature header")
    if not hmac.compare_digest(bytes.fromhex(value), _github_digest(secret, body)):
        raise SignatureError("no matching signature")


def verify_signature(
    secret: str, body: bytes, headers: Mapping[str, str], *, now: float, tolerance: float = 300.0
) -> str:
    """Verify a webhook's signature and return the scheme used, or raise SignatureError.

    Standard Webhooks is chosen whenever `webhook-signature` is present, even if
    `X-Hub-Signature-256` is too, because only it carries a signed timestamp.
    GitHub's scheme signs the body alone: a captured request can be replayed
    unchanged at any time, and this function cannot detect that.
    """
    if not secret:
        raise ValueError("secret must not be empty: an empty HMAC key lets anyone sign")
    # Header names are case-insensitive (RFC 9110); normalise once instead of trusting the Mapping.
    h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    if "webhook-signature" in h:
        _verify_standard(secret, body, h, now, tolerance)
        return STANDARD
    if h.get("x-hub-signature-256"):
        _verify_github(secret, body, h["x-hub-signature-256"])
        return GITHUB
    raise SignatureError("missing signature")

"""Verify inbound webhook signatures in the schemes real senders use; stdlib only, no flask.

Every scheme is checked on the body bytes as received, in constant time. A workflow's
`signature_scheme` names one scheme, or `auto`: the first scheme whose signature header is present,
in the order of SCHEMES, is the one checked. Schemes that sign a timestamp come first, so a request
carrying both a stale Standard Webhooks signature and a GitHub one is refused, not let through by the
scheme that cannot tell a replay."""
from __future__ import annotations

from collections.abc import Mapping

from app.security.signatures import github, shopify, slack, standard, stripe
from app.security.signatures._common import SignatureError

__all__ = ["AUTO", "SCHEMES", "SignatureError", "sign_github", "sign_shopify", "sign_slack", "sign_standard",
           "sign_stripe", "verify_signature", "whsec_key"]

AUTO = "auto"
_BY_NAME = {module.NAME: module for module in (standard, stripe, slack, github, shopify)}
SCHEMES = tuple(_BY_NAME)  # in the order `auto` tries them
STANDARD, GITHUB = standard.NAME, github.NAME
sign_standard, sign_github, sign_stripe = standard.sign, github.sign, stripe.sign
sign_slack, sign_shopify, whsec_key = slack.sign, shopify.sign, standard.whsec_key


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str], *, now: float, scheme: str = AUTO,
                     tolerance: float = 300.0) -> str:
    """Verify a webhook's signature under `scheme` (`auto` or one of SCHEMES) and return the scheme
    that verified it; SignatureError (401) otherwise. Timestamps are Unix seconds, `now` included."""
    if not secret:
        raise ValueError("secret must not be empty: an empty HMAC key lets anyone sign")
    # Header names are case-insensitive (RFC 9110); normalise once instead of trusting the Mapping.
    h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    candidates = SCHEMES if scheme == AUTO else (scheme,)
    for name in candidates:
        module = _BY_NAME[name]
        if h.get(module.HEADER):
            module.verify(secret, body, h, now, tolerance)
            return name
    raise SignatureError("missing signature")

"""Redaction of secrets before anything is logged or stored as an execution's error or result.

Covers the token part of Slack webhook URLs, credentials in URLs (userinfo, token-like query
parameters), bearer/basic credentials in free text and secret header values."""
from __future__ import annotations

import re
from typing import Mapping

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
})

_PATTERNS = (
    # https://hooks.slack.com/services/T000/B000/XXXX: the last segment is the secret.
    (re.compile(r"(/services/[^/\s]+/[^/\s]+/)[^/\s?#'\"<>)]+"), rf"\g<1>{REDACTED}"),
    # Workflow-builder webhooks carry their secret in the whole path.
    (re.compile(r"(hooks\.slack\.com/(?:triggers|workflows)/)[^\s'\"<>)]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]+@"), rf"\g<1>{REDACTED}@"),
    (re.compile(r"(?i)([?&](?:access_token|api_?key|apikey|auth|key|password|secret|sig|signature|token)=)"
                r"[^&\s#'\"<>]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\g<1> {REDACTED}"),
)


# Something every pattern above needs: most texts (header values, error messages) have none of it,
# and one search is much cheaper than five substitutions (this runs on every header of every webhook).
_CANDIDATE = re.compile(r"/services/|hooks\.slack\.com/|://|[?&][A-Za-z_]+=|(?i:bearer|basic)\s")


def redact_text(text: str) -> str:
    """Return `text` with every recognised secret replaced by [REDACTED]."""
    if not _CANDIDATE.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of `headers` with secret values replaced and the others redacted as text."""
    return {
        name: REDACTED if name.lower() in SECRET_HEADERS else redact_text(str(value))
        for name, value in headers.items()
    }

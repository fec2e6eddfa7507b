"""CSRF protection for the dashboard's forms: a random token per session, in a hidden field of every form.

The synchronizer-token pattern (OWASP CSRF cheat sheet): the token lives in the signed session cookie,
which another site can neither read nor set, and every POST must echo it in its `csrf_token` field.
SameSite=Lax on the cookie is a second layer, not the only one."""
from __future__ import annotations

import hmac
import secrets

from flask import request, session

from app.errors import AppError

FIELD = "csrf_token"


class CsrfRefused(AppError):
    status, code = 403, "csrf_refused"


def token() -> str:
    """The session's token, made on first use (templates call it through `csrf_token()`)."""
    if FIELD not in session:
        session[FIELD] = secrets.token_urlsafe(32)
    return session[FIELD]


def rotate() -> None:
    """Give the session a new token (at sign-in, so a token seen before it is worthless after)."""
    session[FIELD] = secrets.token_urlsafe(32)


def verify() -> None:
    """Raise CsrfRefused unless the request's form carries the session's token (constant-time compare)."""
    expected = session.get(FIELD)
    sent = request.form.get(FIELD, "")
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused("This form has expired or did not come from this dashboard. "
                          "Go back, reload the page and send it again.")

"""Sign-in with an API key, sign-out, and the guard every dashboard request passes.

The session cookie (signed with the first IPAAS_SECRET_KEY key; HttpOnly, SameSite=Lax) holds only the
key's prefix, never the key. Each request looks that key up again, so a revoked key ends its sessions
at their next click. Every POST, sign-in included, must carry the session's CSRF token."""
from __future__ import annotations

import logging

from flask import flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from app import logutils
from app.errors import Unauthorized
from app.ui import bp, csrf
from app.ui.pages import is_htmx, services

log = logging.getLogger(__name__)
PUBLIC = {"ui.root", "ui.home", "ui.login", "ui.static"}


@bp.before_request
def guard() -> Response | None:
    prefix = session.get("key_prefix")
    if prefix is not None:
        try:
            g.principal = services().session_principal(prefix)
            logutils.add(tenant_id=g.principal.tenant_id, user_id=g.principal.user_id)
        except Unauthorized:
            session.clear()
            flash("The API key of your session was revoked. Sign in with another key.", "error")
    if "principal" not in g and request.endpoint not in PUBLIC:
        return _to_login()
    if request.method == "POST":
        csrf.verify()
    return None


def _to_login() -> Response:
    target = url_for("ui.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
    if is_htmx():
        # A poll whose session ended: have htmx load the sign-in page instead of swapping it into a table.
        response = Response("", 401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)


def _safe_next(value: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect would make phishing easy)."""
    if value and value.startswith("/ui/") and "\\" not in value:
        return value
    return url_for("ui.workflows")


@bp.get("/")
def root() -> Response:
    return redirect(url_for("ui.home"))


@bp.get("/ui/")
def home() -> Response:
    return redirect(url_for("ui.workflows"))


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        if "principal" in g:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", next=request.args.get("next", ""), error=None)
    try:
        principal = services().sign_in(request.form.get("api_key", ""))
    except Unauthorized:
        return render_template("login.html", next=request.form.get("next", ""),
                               error="This key is not valid or was revoked. Paste the whole key the CLI printed."), 401
    session.clear()  # a fresh session: nothing from before sign-in carries over
    session["key_prefix"] = principal.key_prefix
    csrf.rotate()
    log.info("dashboard sign-in", extra={"data": {"key_prefix": principal.key_prefix}})
    return redirect(_safe_next(request.form.get("next")), 303)


@bp.route("/ui/logout", methods=["GET", "POST"])
def logout() -> Response | str:
    if request.method == "GET":
        return render_template("logout.html")
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"), 303)

"""The dashboard: server-rendered pages over the same Services the API calls (README, "Dashboard").

One blueprint, `bp`, with its templates and static files beside it. Pages live under /ui/; `/` sends a
browser there. The page modules import `bp` from here and add their routes when init_app imports them."""
from __future__ import annotations

from flask import Blueprint, Flask, Response

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static")

# Only this origin's files; no inline script or style, so an injected tag could not run even if escaping failed.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def init_app(app: Flask) -> None:
    """Register the dashboard; sessions signed with an older IPAAS_SECRET_KEY key stay valid after a rotation."""
    from app.ui import credentials, executions, filters, queue, session, workflows  # noqa: F401 (they add routes to bp)

    app.config["SECRET_KEY_FALLBACKS"] = list(app.config["SECRET_KEYS"][1:])
    filters.init_app(app)
    app.register_blueprint(bp)


@bp.after_request
def protect_pages(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        # Pages show a tenant's data: after sign-out the back button must not show them from cache.
        response.headers.setdefault("Cache-Control", "no-store")
    return response

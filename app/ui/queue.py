"""The queue page: load from the numbers /metrics exports, the tenant's last hour, its recent failures."""
from __future__ import annotations

from werkzeug.wrappers import Response

from app.ui import bp
from app.ui.pages import principal, render_page, services


@bp.get("/ui/queue")
def queue() -> Response:
    overview = services().queue_overview(principal())
    return render_page("queue.html", "_queue.html", overview=overview)

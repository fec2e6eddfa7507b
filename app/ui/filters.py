"""Template filters and globals of the dashboard: UTC ISO times, readable JSON and durations."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import Flask, g

from app.ui import csrf


def iso(value: datetime | None) -> str:
    """2024-05-01T12:34:56Z: UTC, to the second, as ISO 8601 (the API gives milliseconds)."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pretty(value: Any) -> str:
    """JSON indented for reading; autoescaping then shows any markup in it as text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def init_app(app: Flask) -> None:
    app.add_template_filter(iso)
    app.add_template_filter(pretty)
    app.add_template_filter(duration)

    @app.context_processor
    def dashboard_globals() -> dict[str, Any]:
        return {"csrf_token": csrf.token, "principal": g.get("principal")}

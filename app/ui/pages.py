"""What every dashboard view shares: the caller's principal, Services, page-or-partial rendering, error pages."""
from __future__ import annotations

import logging

from flask import Response, current_app, g, make_response, render_template, request

from app.errors import AppError
from app.models import Principal
from app.services import Services
from app.store import StoreError
from app.ui import bp

log = logging.getLogger(__name__)


def services() -> Services:
    return current_app.extensions["ipaas"]


def principal() -> Principal:
    return g.principal


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def render_page(template: str, partial: str, status: int = 200, **context) -> Response:
    """The whole page, or only its live part when htmx polls for it: the page includes the same partial,
    so a refresh is the same HTML as a reload (healthchecks' pattern)."""
    response = make_response(render_template(partial if is_htmx() else template, **context), status)
    response.vary.add("HX-Request")
    return response


def error_page(status: int, title: str, message: str) -> Response:
    template = "_error.html" if is_htmx() else "error.html"
    return make_response(render_template(template, status=status, title=title, message=message), status)


@bp.errorhandler(AppError)
def app_error(error: AppError) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 409: "Not possible now", 422: "Not valid"}
    return error_page(error.status, titles.get(error.status, "Something went wrong"), error.message)


@bp.errorhandler(StoreError)
def store_error(error: StoreError) -> Response:
    log.error("store unavailable", extra={"data": {"error": str(error)}})
    return error_page(503, "Database unavailable", "The database did not answer. Try again in a few seconds.")

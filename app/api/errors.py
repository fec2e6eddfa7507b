"""Every error leaves as JSON {"error": {"code", "message"}}, Flask's own 404/405/413/500 included."""
from __future__ import annotations

import logging
import math

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.api import requestlog
from app.api.auth import services
from app.errors import AppError, Unauthorized
from app.store import StoreError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, field: str | None = None,
                   retry_after: float | None = None) -> Response:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    response = jsonify({"error": error})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def store_unavailable(error: StoreError) -> None:
    """Note a request refused because the store failed: counted, fed to the store's health, and told
    by the request's one access line (a warning with the reason), not by a traceback."""
    services().health.failed("request", error)
    requestlog.refused_because(f"store unavailable: {error}")


def response_for(error: Exception) -> Response:
    """The JSON response for an error raised while answering a request: the app's one error handler,
    which api/thin.py calls too. Needs an app context."""
    if isinstance(error, AppError):
        response = error_response(error.status, error.code, error.message, field=error.field,
                                  retry_after=error.retry_after)
        if isinstance(error, Unauthorized) and error.challenge:
            response.headers["WWW-Authenticate"] = error.challenge
        return response
    if isinstance(error, HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response
    if isinstance(error, StoreError):
        store_unavailable(error)
        return error_response(503, "store_unavailable", "the database is unavailable, try again", retry_after=5)
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal server error")


def init_app(app: Flask) -> None:
    # Flask finds this handler for every exception class, HTTPException included (the dashboard's
    # blueprint handlers for its pages come first).
    app.register_error_handler(Exception, response_for)

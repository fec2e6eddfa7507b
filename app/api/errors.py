"""Every error leaves as JSON {"error": {"code", "message"}}, Flask's own 404/405/413/500 included."""
from __future__ import annotations

import logging
import math

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.errors import AppError, Unauthorized
from app.store import StoreError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, field: str | None = None,
                   retry_after: float | None = None):
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    response = jsonify({"error": error})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(AppError)
    def app_error(error: AppError):
        response = error_response(error.status, error.code, error.message, field=error.field,
                                  retry_after=error.retry_after)
        if isinstance(error, Unauthorized) and error.challenge:
            response.headers["WWW-Authenticate"] = error.challenge
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(StoreError)
    def store_error(error: StoreError):
        log.error("store unavailable", extra={"data": {"error": str(error)}})
        return error_response(503, "store_unavailable", "the database is unavailable, try again", retry_after=5)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")

"""Typed errors raised below the HTTP layer; api/errors.py turns each into a JSON response."""
from __future__ import annotations


class AppError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after


class BadRequest(AppError):
    status, code = 400, "bad_request"


class Unauthorized(AppError):
    status, code = 401, "unauthorized"
    challenge: str | None = None  # the WWW-Authenticate header value, if any


class BadApiKey(Unauthorized):
    """No valid API key: answered with the RFC 6750 challenge `Bearer` (`error="invalid_token"`
    when a key was sent but is unknown or revoked)."""

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.challenge = 'Bearer realm="ipaas", error="invalid_token"' if sent else 'Bearer realm="ipaas"'


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(AppError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(AppError):
    status, code = 422, "validation_failed"


class RateLimited(AppError):
    status, code = 429, "rate_limited"


class QueueFull(AppError):
    status, code = 503, "queue_full"


class Unavailable(AppError):
    status, code = 503, "unavailable"

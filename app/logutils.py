"""JSON logging: one object per line with the fields of API.md, ids taken from a context variable.

`bind(tenant_id=..., execution_id=...)` sets ids for everything logged inside the block, in the
request thread or in a worker thread alike; `extra={"data": {...}}` adds the `data` object. Inside
an OpenTelemetry span (app/tracing.py) each line also carries `trace_id` and `span_id`.

The line format itself lives in serving/logformat.py, which gunicorn's master uses too without
importing this package (so that a HUP reloads all of `app`)."""
from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from opentelemetry import trace

from serving.logformat import SERVICE, Formatter, ServiceFilter

__all__ = ["SERVICE", "Formatter", "ContextFilter", "bind", "add", "current", "configure", "json_handler"]
CONTEXT_FIELDS = ("request_id", "tenant_id", "user_id", "workflow_id", "execution_id")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("ipaas_log_context", default={})


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Attach ids to every log line written inside the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    reset = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(reset)


def add(**fields: str | None) -> None:
    """Attach more ids to the current block (a request's tenant once it is authenticated)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def current(field: str) -> str | None:
    return _context.get().get(field)


class ContextFilter(logging.Filter):
    """Copy the bound ids, and the current span's trace_id and span_id, onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = SERVICE
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        return True


def json_handler(stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter())
    handler.addFilter(ServiceFilter())
    handler.addFilter(ContextFilter())
    return handler


def configure(level: str) -> None:
    """Send every logger's records, as JSON, to stderr; idempotent, so create_app may run twice.

    Under gunicorn the root logger already has the master's JSON handler (gunicorn.conf.py), which
    knows nothing of the app: it gets this module's ContextFilter here, in the worker."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handlers = [h for h in root.handlers if isinstance(h.formatter, Formatter)]
    if not handlers:
        root.addHandler(json_handler())
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
    for name in ("gunicorn.error", "werkzeug"):
        logging.getLogger(name).propagate = True

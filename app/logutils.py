"""JSON logging: one object per line with the fields of API.md, ids taken from a context variable.

`bind(tenant_id=..., execution_id=...)` sets ids for everything logged inside the block, in the
request thread or in a worker thread alike; `extra={"data": {...}}` adds the `data` object."""
from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from pythonjsonlogger.json import JsonFormatter

SERVICE = "ipaas-api"
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
    """Copy the bound ids and the service name onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = SERVICE
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class Formatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(timestamp)s %(levelname)s %(message)s %(service)s",
            rename_fields={"levelname": "level"},
            timestamp=True,
        )

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["level"] = str(log_record.get("level", record.levelname)).lower()
        log_record.setdefault("logger", record.name)


def json_handler(stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter())
    handler.addFilter(ContextFilter())
    return handler


def configure(level: str) -> None:
    """Send every logger's records, as JSON, to stderr; idempotent, so create_app may run twice."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(h.formatter, Formatter) for h in root.handlers):
        root.addHandler(json_handler())
    for name in ("gunicorn.error", "werkzeug"):
        logging.getLogger(name).propagate = True

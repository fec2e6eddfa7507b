"""JSON logging: one object per line with the fields of API.md, ids taken from a context variable.

`bind(tenant_id=..., execution_id=...)` sets ids for everything logged inside the block, in the
request thread or in a worker thread alike; `extra={"data": {...}}` adds the `data` object. Inside
an OpenTelemetry span (app/tracing.py) each line also carries `trace_id` and `span_id`.
`extra=repeated(key, **data)` marks a line that an outage repeats, which RepeatFilter summarises.

The line format itself lives in serving/logformat.py, which gunicorn's master uses too without
importing this package (so that a HUP reloads all of `app`)."""
from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from opentelemetry import trace

from serving.logformat import SERVICE, Formatter, ServiceFilter

__all__ = ["SERVICE", "Formatter", "ContextFilter", "RepeatFilter", "bind", "add", "current", "configure",
           "json_handler", "repeated"]
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


def repeated(key: str, **data: Any) -> dict[str, Any]:
    """`extra` for a line that may repeat many times a second (a store error during an outage): lines
    of one logger, level and message with the same `key` are summarised by RepeatFilter."""
    return {"data": data, "repeat_key": key}


@dataclass
class _Run:
    logger: str
    level: int
    message: str
    data: dict[str, Any]
    until: float
    count: int = 0  # dropped so far


# Libraries whose own warnings repeat through a store outage: psycopg_pool logs every failed
# reconnection ("error connecting in 'pool': ..."). Their identical warnings are summarised too.
REPEATING_LOGGERS = ("psycopg.pool",)


class RepeatFilter(logging.Filter):
    """Let the first line of a run of `repeated` lines through and drop the others for `interval` s;
    then log one line "N more like this in the last 10 s: <message>" with data.repeated = N. Warnings
    of `loggers` with the same text count as repeated lines too.

    The summary is written when the next line of any kind passes the handler after the interval (no
    timer thread), outside any request's or execution's ids."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 loggers: tuple[str, ...] = REPEATING_LOGGERS) -> None:
        super().__init__()
        self._interval, self._clock, self._loggers = interval, clock, loggers
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int, str, str], _Run] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        key = record.__dict__.pop("repeat_key", None)
        if key is None and record.levelno >= logging.WARNING and record.name.startswith(self._loggers):
            key = record.getMessage()
        with self._lock:
            ended = [run_key for run_key, run in self._runs.items() if now >= run.until]
            summaries = [run for run in map(self._runs.pop, ended) if run.count]
            keep = True
            if key is not None:
                run_key = (record.name, record.levelno, str(record.msg), str(key))
                run = self._runs.get(run_key)
                if run is None:
                    self._runs[run_key] = _Run(record.name, record.levelno, record.getMessage(),
                                               dict(getattr(record, "data", None) or {}), now + self._interval)
                else:
                    run.count += 1
                    keep = False
        for run in summaries:
            self._summarise(run)
        return keep

    def _summarise(self, run: _Run) -> None:
        reset = _context.set({})  # the summary belongs to no request or execution
        try:
            logging.getLogger(run.logger).log(
                run.level, f"{run.count} more like this in the last {self._interval:g} s: {run.message}",
                extra={"data": {**run.data, "repeated": run.count, "interval_s": self._interval}})
        finally:
            _context.reset(reset)


def json_handler(stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter())
    handler.addFilter(ServiceFilter())
    handler.addFilter(RepeatFilter())
    handler.addFilter(ContextFilter())
    return handler


def configure(level: str) -> None:
    """Send every logger's records, as JSON, to stderr; idempotent, so create_app may run twice.

    Under gunicorn the root logger already has the master's JSON handler (gunicorn.conf.py), which
    knows nothing of the app: it gets this module's RepeatFilter and ContextFilter here, in the worker."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handlers = [h for h in root.handlers if isinstance(h.formatter, Formatter)]
    if not handlers:
        root.addHandler(json_handler())
    for handler in handlers:
        for kind in (RepeatFilter, ContextFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    for name in ("gunicorn.error", "werkzeug"):
        logging.getLogger(name).propagate = True

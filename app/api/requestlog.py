"""A request id on every request (an incoming X-Request-ID is kept) and one JSON access line each:
at info, or at warning with data.error when the request was refused for a reason an operator
should see (the store unavailable), so that such a refusal is one line, not two or a traceback;
at debug when the request accepted an execution whose outcome line (at info) carries its request id.

`start`, `finish` and `unbind` run around every request Flask handles (`init_app`) and around each
webhook that api/thin.py answers without Flask; they keep their state in the app context's `g`."""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Request, Response, g, request

from app import logutils

log = logging.getLogger("ipaas.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def refused_because(reason: str) -> None:
    """Make this request's access line a warning that gives `reason`."""
    g.refused_because = " ".join(reason.split())


def logged_by_outcome() -> None:
    """Write this request's access line at debug: it accepted an execution that this process runs, whose
    outcome line (at info) carries the request's id, so that an execution costs one line at info."""
    g.access_level = logging.DEBUG


def start(req: Request) -> None:
    """Take the request's id (or make one), start its clock, and bind the id to every line logged until `unbind`."""
    incoming = req.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()
    g.log_context = logutils.bind(request_id=g.request_id)
    g.log_context.__enter__()


def finish(req: Request, response: Response) -> Response:
    """Send the request id back and write the access line."""
    response.headers["X-Request-ID"] = g.get("request_id", "")
    reason = g.get("refused_because")
    level = g.get("access_level", logging.INFO) if reason is None else logging.WARNING
    if not log.isEnabledFor(level):
        return response
    duration_ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2)
    data = {"method": req.method, "path": req.path, "status": response.status_code, "duration_ms": duration_ms}
    log.log(level, "request", extra={"data": data if reason is None else {**data, "error": reason}})
    return response


def unbind(_error: BaseException | None = None) -> None:
    context = g.pop("log_context", None)
    if context is not None:
        context.__exit__(None, None, None)


def init_app(app: Flask) -> None:
    app.before_request(lambda: start(request))
    app.after_request(lambda response: finish(request, response))
    app.teardown_request(unbind)

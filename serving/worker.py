"""gunicorn's gthread worker, with its own error pages (a request line over limit_request_line,
too many headers, a malformed request...) sent as the API's JSON errors instead of HTML.

gunicorn answers those before the app sees the request: `Worker.handle_error` (gunicorn/workers/
base.py) picks the status, logs, and calls `util.write_error(client, status, reason, mesg)`, which
writes an HTML page through `client.sendall`. `JsonErrorWorker` keeps gunicorn's choice of status
and its logging, and hands it a stand-in socket that sends the same status as JSON.

Reloads (HUP) and stops. Upstream reports of gthread dropping requests during a HUP (benoitc/gunicorn
#3394, #3380, #3038, #2296) have two causes, found by tests/test_reload.py:
- A kept-alive connection closed by a stopping worker while its client is already sending the next
  request (#3038, #3380: the response said keep-alive, then the worker closed it). The gunicorn
  installed here (27) fixes that itself: a stopping worker answers requests already under way with
  `Connection: close` and keeps idle connections open for STOP_KEEPALIVE_LINGER (2 s) for a request
  being sent. Without that linger the reload test sees resets and broken pipes; it passes with it.
  Releases before 27 lack it, hence `gunicorn>=27` in pyproject.toml.
- With `--reuse-port` each worker has its own listening socket, and the kernel keeps assigning new
  connections to a stopping worker's socket until gunicorn closes it after the whole drain: every
  connection queued there meanwhile is reset (the reload test sees 2-6 resets per run). Accepting
  what is queued and closing the socket as soon as the worker stops shortened that window but still
  left refused connections in one run of four, so it was not kept: reloads are for the default
  shared socket, which stays open in the master and the new workers throughout. (Linux 5.14+'s
  `net.ipv4.tcp_migrate_req=1` moves a closing socket's queue to another socket of the group.)
"""
from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class _JsonErrorSocket:
    """The client socket as handle_error sees it: its HTML error response goes out as JSON."""

    def __init__(self, sock: socket.socket, detail: str) -> None:
        self._sock = sock
        self._detail = detail

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def sendall(self, data: bytes) -> None:
        # The first line is "HTTP/1.1 <status> <reason>"; the HTML after it is dropped.
        _, status, reason = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        # An internal error's text is not the client's business (gunicorn's HTML page has none either).
        message = "internal server error" if int(status) >= 500 else self._detail
        self._sock.sendall(json_error(int(status), reason, message))


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response closing the connection, with the body {"error": {"code", "message"}}."""
    body = json.dumps({"error": {"code": reason.lower().replace(" ", "_"), "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JsonErrorWorker(ThreadWorker):
    """gthread, with JSON error responses (see the module docstring)."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _JsonErrorSocket(client, str(exc) or type(exc).__name__), addr, exc)


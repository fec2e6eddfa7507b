"""gunicorn's gthread worker, with its own error pages (a request line over limit_request_line,
too many headers, a malformed request...) sent as the API's JSON errors instead of HTML.

gunicorn answers those before the app sees the request: `Worker.handle_error` (gunicorn/workers/
base.py) picks the status, logs, and calls `util.write_error(client, status, reason, mesg)`, which
writes an HTML page through `client.sendall`. `JsonErrorWorker` keeps gunicorn's choice of status
and its logging, and hands it a stand-in socket that sends the same status as JSON."""
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

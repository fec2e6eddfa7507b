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
- With reuse_port each worker has its own listening socket, and the kernel keeps assigning new
  connections to a stopping worker's socket until gunicorn closes it after the whole drain
  (ThreadWorker.run closes `self.sockets` last): every connection queued there meanwhile is reset at
  that close (the reload test saw 2-6 resets per run). Closing the socket as soon as the worker stops
  shortened that window but still left refused connections in one run of four. Linux 5.14+'s
  `net.ipv4.tcp_migrate_req=1` fixes it: at the close the kernel moves the queued connections, and
  those still in their handshake, to another socket of the group (a new worker's), and the reload test
  answers every request. So gunicorn.conf.py turns reuse_port on only with that sysctl
  (serving/listeners.py). Two things remained, measured with the reload test's load and with 40-65
  HUPs under a light one: a connection queued on a stopping worker waited for its drain (up to
  STOP_KEEPALIVE_LINGER, 2 s: slowest new connection 1.7-2.6 s, 1.0-1.1 s with the shared socket), and
  when the old workers, idle, closed before the new ones had bound, nothing listened for an instant
  (1 refused connection in 65 reloads; shared socket 0 in 40). `Handoff` takes both away (0.7-0.85 s,
  0 in 40): a stopping worker closes its sockets at once, but only once a newer socket listens beside
  each, or HANDOFF_WAIT later (a shutdown).
"""
from __future__ import annotations

import json
import socket
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from serving.listeners import Handoff

# Seconds a stopping worker keeps its reuse_port sockets open for a newer one to listen beside them: a new
# worker binds within milliseconds of its fork, which precedes the old workers' SIGTERM; at a shutdown
# nobody comes, and the sockets close this much later than they could have.
HANDOFF_WAIT = 1.0


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
    """gthread, with JSON error responses and, with reuse_port, a handoff of its sockets when it stops."""

    handoff: Handoff | None = None

    def run(self) -> None:
        if self.cfg.reuse_port:
            self.handoff = Handoff(self.sockets)
        super().run()
        if self.handoff is not None:
            self.handoff.join()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive and self.handoff is not None and self.sockets:
            # Stopping: hand the sockets over, or ThreadWorker.run would close them only after the drain.
            self.handoff.start(deadline=time.monotonic() + HANDOFF_WAIT)
            self.sockets = []

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _JsonErrorSocket(client, str(exc) or type(exc).__name__), addr, exc)


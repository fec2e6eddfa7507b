"""A real HTTP server on 127.0.0.1 for action tests: records requests, answers as scripted.

    with Receiver() as rx:
        rx.respond("/hook", Reply(503), Reply(200, body="ok"))   # one reply per request, last repeats
        rx.respond("/slow", Reply(hang=True))                      # silent until rx.release()
        rx.redirect("/jump", "http://127.0.0.2:9/")
        ... rx.url("/hook") ...
        rx.wait_for(2, timeout=5)

Test modules get it as the `receiver` fixture, and HttpClients from `make_client`, by importing
those names from here.
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from app.engine.http import HttpClient
from app.metrics import Metrics
from app.security.breaker import HostBreakers
from app.security.ssrf import AddressPolicy

HANG_CAP = 30.0  # seconds a hanging reply waits at most, so a forgotten release cannot wedge a run


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str | bytes = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False  # say nothing until Receiver.release()
    drip: float = 0.0  # send the answer one byte every `drip` seconds (from `drip_from`: 0 is the status line)
    drip_from: int = 0
    length: bool = True  # send Content-Length (else the body ends when the connection closes)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections get reused as in production
    timeout = 10
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        reply = receiver._record(Recorded(self.command, self.path.split("?", 1)[0],
                                          {k.lower(): v for k, v in self.headers.items()}, body))
        if reply.hang or reply.delay:
            receiver._released.wait(HANG_CAP if reply.hang else reply.delay)
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.length:
            self.send_header("Content-Length", str(len(payload)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if not reply.drip:
            self.end_headers()
            self.wfile.write(payload)
            return
        self._headers_buffer.append(b"\r\n")  # end_headers without the flush: the head drips too
        answer = b"".join(self._headers_buffer) + payload
        self._headers_buffer = []
        self.wfile.write(answer[:reply.drip_from])
        for index in range(reply.drip_from, len(answer)):
            if receiver._released.wait(reply.drip):
                break  # the test is over
            self.wfile.write(answer[index:index + 1])
            self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read the recorded requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close joins the handler threads: nothing outlives the test

    def __init__(self, receiver: Receiver, tls: ssl.SSLContext | None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.receiver = receiver
        self.tls = tls
        self.connections: set[socket.socket] = set()

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = super().get_request()
        if self.tls is None:
            return request, address
        # Handshake in the handler thread (on first read), so one bad client cannot stall accept().
        return self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False), address

    def process_request(self, request, client_address) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a cancelled action) is expected here, not an error."""


class Receiver:
    """Serves plain HTTP, or HTTPS with `tls` (then its URLs name the host localhost, for the certificate)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._scheme, self._host = ("https", "localhost") if tls else ("http", "127.0.0.1")
        self._lock = threading.Condition()
        self._requests: list[Recorded] = []
        self._replies: dict[str, list[Reply]] = {}
        self._released = threading.Event()
        self._server = _Server(self, tls)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="receiver", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"{self._scheme}://{self._host}:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._server.shutdown()
        self._thread.join()
        for connection in list(self._server.connections):  # idle keep-alive clients
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def respond(self, path: str, *replies: Reply) -> None:
        """Answer requests to `path` with these replies in turn, repeating the last one."""
        with self._lock:
            self._replies[path] = list(replies)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.respond(path, Reply(status, body="", headers={"Location": location}))

    def release(self) -> None:
        """Let every hanging or delayed reply answer now (and later ones answer at once)."""
        self._released.set()

    def _record(self, recorded: Recorded) -> Reply:
        with self._lock:
            self._requests.append(recorded)
            self._lock.notify_all()
            replies = self._replies.get(recorded.path) or [Reply()]
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, count: int, timeout: float = 5.0, path: str | None = None) -> list[Recorded]:
        """Wait until at least `count` requests (to `path`) arrived; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(found := [r for r in self._requests if path is None or r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests to {path or 'any path'}, got {len(found)}")
                self._lock.wait(left)
            return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def make_client() -> Iterator[Callable[..., HttpClient]]:
    """Build HttpClients (private networks allowed unless a policy says otherwise), closed at teardown."""
    clients: list[HttpClient] = []

    def make(policy: AddressPolicy = AddressPolicy(allow_private=True), breakers: HostBreakers | None = None,
             timeout: float = 2.0) -> HttpClient:
        breakers = breakers or HostBreakers(Metrics(), fail_max=100, reset_timeout=300)
        clients.append(HttpClient(policy=policy, breakers=breakers, default_timeout=timeout))
        return clients[-1]

    yield make
    for client in clients:
        client.close()

"""Outbound HTTP for actions: guarded against SSRF, cancellable, one pooled session per worker thread.

Every connection, redirects included, is made by `_GuardedConnection._new_conn`: it resolves the
host itself, checks every address (security/ssrf.py) and connects to a checked address, while TLS
keeps SNI and certificate checks on the host name. Each socket a request uses is registered with
the request's CancelToken, so a cancel shuts it down and a read blocked on a silent server returns
at once instead of at its timeout."""
from __future__ import annotations

import contextvars
import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from app.connectors.base import ActionError
from app.engine.cancel import CancelToken
from app.security.breaker import CircuitOpen, HostBreakers
from app.security.redact import redact_text
from app.security.ssrf import AddressPolicy, BlockedDestination, resolve_and_check

MAX_REDIRECTS = 5
READ_LIMIT = 64 * 1024  # bytes of a response body kept; results show less, the rest is dropped
USER_AGENT = "ipaas/0.1"


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: CaseInsensitiveDict[str]
    body: str


class _Call:
    """One request in flight: its token, its address policy and the sockets a cancel must shut."""

    def __init__(self, token: CancelToken, policy: AddressPolicy):
        self.token = token
        self.policy = policy
        self._lock = threading.RLock()  # on_cancel runs _shut at once, inside watch, if already set
        self._watched: list[tuple[socket.socket, Callable[[], None]]] = []

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the token is set. A dup of the descriptor is kept because TLS
        wrapping detaches the original socket object; shutting the dup shuts the connection."""
        with self._lock:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            self._watched.append((dup, self.token.on_cancel(lambda: self._shut(dup))))

    def _shut(self, dup: socket.socket) -> None:
        with self._lock:  # never on a dup that close() has already closed
            if dup.fileno() == -1:
                return
            try:
                dup.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected (yet, or any more): nothing to interrupt

    def close(self) -> None:
        with self._lock:
            for dup, unregister in self._watched:
                unregister()
                dup.close()
            self._watched.clear()


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("ipaas_http_call", default=None)


def _call() -> _Call:
    call = _current.get()
    if call is None:
        raise RuntimeError("guarded connections are only made inside HttpClient.send")
    return call


class _GuardedConnection:
    """Mixin for urllib3 connections: resolve, check every address, connect to a checked one."""

    def _new_conn(self) -> socket.socket:
        call = _call()
        try:
            infos = resolve_and_check(self._dns_host, self.port, call.policy)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        error: OSError | None = None
        for family, kind, proto, sockaddr in infos:
            call.token.check()  # a cancel aborts a connect; do not go on to the next address
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                call.watch(sock)
                sock.connect(sockaddr)
                return sock
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(self, str(error))

    def request(self, *args, **kwargs) -> None:
        if self.sock is not None:  # a pooled connection, reused by this request
            _call().watch(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose every connection goes through the SSRF guard."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def guarded_session() -> requests.Session:
    """Return a Session whose connections all pass the guard and follow at most 5 redirects."""
    session = requests.Session()
    # Proxies from the environment would make the guard judge the proxy, not the destination;
    # trust_env=False also drops the CA bundle variables, so they are read here as requests would.
    session.trust_env = False
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = USER_AGENT
    adapter = GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


_PREFIX = re.compile(r"^(<[^<>]*? object at 0x[0-9a-f]+>|\w+\(host='[^']*', port=\d+\)): ")


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests error, without urllib3's object reprs and secrets."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None) or exc.__cause__ or next(
            (arg for arg in reversed(exc.args) if isinstance(arg, BaseException)), None)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    return redact_text(_PREFIX.sub("", str(exc)) or type(exc).__name__)


def _failure(exc: requests.RequestException, host: str, seconds: float) -> ActionError:
    """Classify a requests error: connection errors and timeouts may succeed on a later attempt."""
    if isinstance(exc, requests.ConnectTimeout):
        return ActionError(f"connection to {host} timed out after {seconds:g} s", retryable=True)
    if isinstance(exc, requests.Timeout):
        return ActionError(f"no response from {host} within {seconds:g} s", retryable=True)
    if isinstance(exc, requests.TooManyRedirects):
        return ActionError(f"more than {MAX_REDIRECTS} redirects from {host}")
    if isinstance(exc, requests.exceptions.SSLError):
        return ActionError(f"TLS error with {host}: {_cause(exc)}")
    if isinstance(exc, requests.ConnectionError):
        return ActionError(f"connection to {host} failed: {_cause(exc)}", retryable=True)
    return ActionError(f"invalid request to {host}: {_cause(exc)}")


def _read_body(response: requests.Response) -> str:
    chunks, size = [], 0
    for chunk in response.iter_content(8192):
        chunks.append(chunk)
        size += len(chunk)
        if size >= READ_LIMIT:
            break
    raw = b"".join(chunks)[:READ_LIMIT]
    try:
        return raw.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # the server named a charset Python does not know
        return raw.decode("utf-8", errors="replace")


class HttpClient:
    """Sends action requests: per-thread sessions, the guard, host breakers and timeouts."""

    def __init__(self, *, policy: AddressPolicy, breakers: HostBreakers, default_timeout: float,
                 session_factory: Callable[[], requests.Session] | None = None):
        self._policy = policy
        self._breakers = breakers
        self._default_timeout = default_timeout
        self._factory = session_factory or guarded_session
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._factory()
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, method: str, url: str, *, token: CancelToken, headers: dict[str, str] | None = None,
             data: bytes | None = None, timeout: float | None = None) -> HttpResponse:
        """Send one request; raise ActionError for errors and HTTP 4xx/5xx answers (retryable: 5xx,
        429, connection errors, timeouts) and Cancelled once the token is set."""
        host = urlsplit(url).hostname or ""
        try:
            self._breakers.before(host)
        except CircuitOpen as exc:
            raise ActionError(str(exc)) from exc
        token.check()
        seconds = float(timeout or self._default_timeout)
        remaining = token.remaining()
        if remaining is not None:
            seconds = max(0.001, min(seconds, remaining))
        call = _Call(token, self._policy)
        reset = _current.set(call)
        try:
            with self._session().request(method, url, headers=headers, data=data, stream=True,
                                         timeout=(seconds, seconds)) as answer:
                response = HttpResponse(answer.status_code, CaseInsensitiveDict(answer.headers), _read_body(answer))
        except BlockedDestination as exc:
            raise ActionError(exc.message) from exc
        except requests.RequestException as exc:
            token.check()  # a cancel shut the socket down: the cancel is the outcome, not the error
            error = _failure(exc, host, seconds)
            if error.retryable:
                self._breakers.record(host, failed=True)
            raise error from exc
        finally:
            _current.reset(reset)
            call.close()
        return self._judge(host, response)

    def _judge(self, host: str, response: HttpResponse) -> HttpResponse:
        status = response.status_code
        retryable = status >= 500 or status == 429
        self._breakers.record(host, failed=retryable)
        if status < 400:
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
        raise ActionError(f"HTTP {status} from {host}", retryable=retryable, retry_after=retry_after,
                          status_code=status, body=response.body)

    def close(self) -> None:
        """Close every thread's session; call once the workers are done."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
        for session in sessions:
            session.close()

"""Outbound HTTP for actions: one pooled, guarded session per worker thread (engine/guarded.py),
host circuit breakers, timeouts bounded by the job's deadline, and errors classified for retries."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from app.connectors.base import ActionError
from app.engine.cancel import CancelToken
from app.engine.guarded import MAX_REDIRECTS, guarded_call, guarded_session
from app.security.breaker import CircuitOpen, HostBreakers
from app.security.redact import redact_text
from app.security.ssrf import AddressPolicy, BlockedDestination

READ_LIMIT = 64 * 1024  # bytes of a response body kept; results show less, the rest is dropped


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: CaseInsensitiveDict[str]
    body: str


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
        try:
            with guarded_call(token, self._policy), self._session().request(
                    method, url, headers=headers, data=data, stream=True, timeout=(seconds, seconds)) as answer:
                response = HttpResponse(answer.status_code, CaseInsensitiveDict(answer.headers), _read_body(answer))
        except BlockedDestination as exc:
            raise ActionError(exc.message) from exc
        except requests.RequestException as exc:
            token.check()  # a cancel shut the socket down: the cancel is the outcome, not the error
            error = _failure(exc, host, seconds)
            if error.retryable:
                self._breakers.record(host, failed=True)
            raise error from exc
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

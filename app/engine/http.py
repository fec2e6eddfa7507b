"""Outbound HTTP for actions through one shared urllib3 PoolManager whose connections pass the SSRF
guard (engine/guarded.py): redirects followed as RFC 9110 §15.4 says, host circuit breakers, a
timeout that bounds each attempt as a whole (engine/watchdog.py), within the job's deadline, and
errors classified for retries."""
from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Collection, Mapping
from urllib.parse import urljoin, urlsplit

from urllib3 import BaseHTTPResponse, HTTPHeaderDict, PoolManager, Timeout
from urllib3.exceptions import (ClosedPoolError, ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError, SSLError)
from urllib3.util.request import ACCEPT_ENCODING

from app.connectors.base import ActionError
from app.engine.cancel import CancelToken
from app.engine.guarded import guarded_call, guarded_pool_manager
from app.engine.watchdog import Watchdog
from app.security.breaker import CircuitOpen, HostBreakers
from app.security.redact import redact_text
from app.security.ssrf import AddressPolicy, BlockedDestination
from app.tracing import NO_TRACING, Tracing

MAX_REDIRECTS = 5
READ_LIMIT = 64 * 1024  # bytes of a response body kept (later steps see them; results show less); the rest is dropped
# What requests sent with every request, so receivers see no difference.
DEFAULT_HEADERS = {"User-Agent": "ipaas/0.1", "Accept-Encoding": ", ".join(ACCEPT_ENCODING.split(",")),
                   "Accept": "*/*", "Connection": "keep-alive"}
_PORTS = {"http": 80, "https": 443}


# Media types whose bodies are text although not text/*; anything else not text/* is kept as bytes.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript", "application/ecmascript",
                        "application/x-www-form-urlencoded", "application/x-ndjson", "application/graphql",
                        "application/problem+json", "application/yaml"})


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: HTTPHeaderDict  # case-insensitive
    body: str | bytes  # bytes: the answer is not text (image/png, application/octet-stream...)
    truncated: bool = False  # the server sent more than READ_LIMIT bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class _TooManyRedirects(HTTPError):
    """The server redirected more than MAX_REDIRECTS times."""


class _AttemptExpired(HTTPError):
    """The attempt's whole time ran out (connecting, or the answer arriving too slowly)."""


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
    """The innermost reason of a urllib3 error, without its object reprs and secrets."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None) or exc.__cause__ or next(
            (arg for arg in reversed(exc.args) if isinstance(arg, BaseException)), None)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    return redact_text(_PREFIX.sub("", str(exc)) or type(exc).__name__)


def _timeout(exc: Exception) -> bool:
    """Whether urllib3 reports a socket timeout (it derives NewConnectionError, refused or unresolved,
    from ConnectTimeoutError)."""
    return isinstance(exc, ReadTimeoutError) or isinstance(exc, ConnectTimeoutError) and not isinstance(
        exc, NewConnectionError)


def _failure(exc: Exception, host: str, seconds: float) -> ActionError:
    """Classify an error: connection errors and timeouts may succeed on a later attempt."""
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        return ActionError(f"connection to {host} timed out after {seconds:g} s", retryable=True)
    if isinstance(exc, (ReadTimeoutError, _AttemptExpired)):  # silent, or answering too slowly
        return ActionError(f"no response from {host} within {seconds:g} s", retryable=True)
    if isinstance(exc, _TooManyRedirects):
        return ActionError(f"more than {MAX_REDIRECTS} redirects from {host}")
    if isinstance(exc, SSLError):
        return ActionError(f"TLS error with {host}: {_cause(exc)}")
    if isinstance(exc, (NewConnectionError, ProtocolError, ClosedPoolError)):
        return ActionError(f"connection to {host} failed: {_cause(exc)}", retryable=True)
    return ActionError(f"invalid request to {host}: {_cause(exc)}")


def _read_body(answer: BaseHTTPResponse) -> bytes:
    """Read at most READ_LIMIT + 1 bytes (one more tells a cut body); the connection goes back to the pool
    only if nothing is left unread."""
    try:
        return answer.read(READ_LIMIT + 1)
    finally:
        if not answer.closed:
            answer.close()
        answer.release_conn()


def _decode(raw: bytes, headers: HTTPHeaderDict) -> str | bytes:
    """Decode a text answer with the Content-Type charset, else as requests did: ISO-8859-1 for
    text/*, else UTF-8. A non-text answer stays bytes: a type that is not text and names no charset,
    or no type and bytes that are not UTF-8 (a cut-off last character aside)."""
    mime, *params = headers.get("Content-Type", "").split(";")
    mime = mime.strip().lower()
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip(" \"'") or "utf-8"
    if charset is None and not _textual(mime, raw):
        return raw
    charset = charset or ("ISO-8859-1" if mime.startswith("text/") else "utf-8")
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # the server named a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _textual(mime: str, raw: bytes) -> bool:
    if mime:
        return mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith(("+json", "+xml"))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"  # READ_LIMIT cut a character in two
    return True


def _same_origin(old: str, new: str) -> bool:
    """Whether a redirect may keep Authorization: same scheme, host and port, or http upgraded to https."""
    a, b = urlsplit(old), urlsplit(new)
    if a.hostname != b.hostname:
        return False
    upgrade = a.scheme == "http" and a.port in (80, None) and b.scheme == "https" and b.port in (443, None)
    return upgrade or (a.scheme, a.port or _PORTS.get(a.scheme)) == (b.scheme, b.port or _PORTS.get(b.scheme))


def _redirect(status: int, method: str, url: str, location: str, headers: HTTPHeaderDict,
              body: bytes | None, sensitive: Collection[str] = ()) -> tuple[str, str, HTTPHeaderDict, bytes | None]:
    """The request a redirect asks for (RFC 9110 §15.4, as curl makes it): 303 turns any method but
    HEAD into GET without a body, 301 and 302 turn POST alone into GET (what every client does
    although the RFC only allows it); every other case keeps the method and the body. A redirect that
    leaves the origin drops Authorization and the `sensitive` headers (a credential's own header)."""
    # http.client decodes header bytes as latin-1, but servers send UTF-8 locations.
    target = urljoin(url, location.encode("latin-1").decode("utf-8"))
    headers = headers.copy()
    if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
        method, body = "GET", None
        for name in ("Content-Length", "Content-Type", "Transfer-Encoding"):
            headers.discard(name)
    for name in ("Cookie", "Proxy-Authorization"):  # requests rebuilt these from its cookie jar and proxies
        headers.discard(name)
    if not _same_origin(url, target):
        for name in ("Authorization", *sensitive):
            headers.discard(name)
    return method, target, headers, body


class HttpClient:
    """Sends action requests: pooled keep-alive connections, the guard, host breakers and timeouts.

    `pool_size` idle connections are kept per host (the engine passes its worker count);
    `manager_factory(pool_size)` replaces engine/guarded.py's `guarded_pool_manager`."""

    def __init__(self, *, policy: AddressPolicy, breakers: HostBreakers, default_timeout: float, pool_size: int = 10,
                 manager_factory: Callable[[int], PoolManager] | None = None, tracing: Tracing = NO_TRACING):
        self._policy = policy
        self._tracing = tracing
        self._breakers = breakers
        self._default_timeout = default_timeout
        self._manager = (manager_factory or guarded_pool_manager)(pool_size)
        self._watchdog = Watchdog()
        self._headers: Mapping[str, str] = {}

    def with_headers(self, headers: Mapping[str, str]) -> HttpClient:
        """A client sharing this one's connections, guard, breakers and watchdog that adds `headers` to every
        request it sends; a request's own header of the same name (any case) wins. Close only the original."""
        added = copy.copy(self)
        added._headers = {**self._headers, **headers}
        return added

    @property
    def policy(self) -> AddressPolicy:
        """The destinations actions may reach (connectors that open their own sockets apply it too)."""
        return self._policy

    def send(self, method: str, url: str, *, token: CancelToken, headers: dict[str, str] | None = None,
             data: bytes | None = None, timeout: float | None = None, sensitive: Collection[str] = ()) -> HttpResponse:
        """Send one request; raise ActionError for errors and HTTP 4xx/5xx answers (retryable: 5xx,
        429, connection errors, timeouts) and Cancelled once the token is set. `sensitive` names headers
        that, like Authorization, are not sent on to another origin by a redirect."""
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
        if self._headers:
            headers = {**self._headers, **(headers or {})}  # HTTPHeaderDict: the later name wins
        try:
            with guarded_call(token, self._policy) as call:
                stop_watch = self._watchdog.at(time.monotonic() + seconds, call.expire)
                try:
                    response = self._exchange(method, url, headers, data, Timeout(connect=seconds, read=seconds),
                                              sensitive)
                finally:
                    stop_watch()
                if call.expired:  # a body that ends at the close may have looked complete
                    raise _AttemptExpired()
        except BlockedDestination as exc:
            raise ActionError(exc.message) from exc
        except (HTTPError, ValueError) as exc:  # ValueError: a URL or header http.client refuses
            token.check()  # a cancel shut the socket down: the cancel is the outcome, not the error
            error = _failure(_AttemptExpired() if call.expired and not _timeout(exc) else exc, host, seconds)
            if error.retryable:
                self._breakers.record(host, failed=True)
            raise error from exc
        return self._judge(host, response)

    def _exchange(self, method: str, url: str, headers: dict[str, str] | None, body: bytes | None,
                  timeout: Timeout, sensitive: Collection[str]) -> HttpResponse:
        merged = HTTPHeaderDict(DEFAULT_HEADERS)
        merged.update(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            # urllib3 retries nothing (the runner does) and follows no redirect (_redirect does).
            with self._tracing.client_request(method, url, merged) as span:
                answer = self._manager.urlopen(method, url, body=body, headers=merged, timeout=timeout,
                                               retries=False, redirect=False, preload_content=False)
                self._tracing.record_response(span, answer.status)
                raw = _read_body(answer)
            location = answer.get_redirect_location()
            if not location:
                return HttpResponse(answer.status, answer.headers, _decode(raw[:READ_LIMIT], answer.headers),
                                    truncated=len(raw) > READ_LIMIT)
            method, url, merged, body = _redirect(answer.status, method, url, location, merged, body, sensitive)
        raise _TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def _judge(self, host: str, response: HttpResponse) -> HttpResponse:
        status = response.status_code
        retryable = status >= 500 or status == 429
        self._breakers.record(host, failed=retryable)
        if status < 400:
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
        raise ActionError(f"HTTP {status} from {host}", retryable=retryable, retry_after=retry_after,
                          status_code=status, body=response.body, content_type=response.content_type)

    def close(self) -> None:
        """Close every pooled connection and stop the watchdog; call once the workers are done."""
        self._manager.clear()
        self._watchdog.close()

"""A urllib3 PoolManager for action requests whose connections pass the SSRF guard and can be cancelled.

Every connection, redirects included, is made by `_GuardedConnection._new_conn`: it resolves the
host itself, checks every address (security/ssrf.py) and connects to a checked address, while TLS
keeps SNI and certificate checks on the host name. Each socket a request uses, new or reused from
the pool, is registered with the request's CancelToken, so a cancel shuts it down and a read blocked
on a silent server returns at once instead of at its timeout. `_Call.expire` shuts them the same
way when the attempt's own time is up (engine/watchdog.py calls it)."""
from __future__ import annotations

import contextvars
import os
import socket
from contextlib import contextmanager
from typing import Iterator

import certifi
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from app.engine.cancel import CancelToken, SocketWatch
from app.security.ssrf import AddressPolicy, resolve_and_check

HOSTS_KEPT = 50  # hosts whose idle keep-alive connections are kept, least recently used out first


class _Call(SocketWatch):
    """One request in flight: its token, its address policy and the sockets a cancel must shut."""

    def __init__(self, token: CancelToken, policy: AddressPolicy):
        super().__init__(token)
        self.policy = policy


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


def ca_bundle() -> str:
    """The CA certificates actions trust (a file or a directory): REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
    as for requests, else certifi's bundle."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


def guarded_pool_manager(maxsize: int) -> PoolManager:
    """Return a thread-safe PoolManager whose connections all pass the guard, keeping up to
    `maxsize` idle connections per host (more may be open at once: the pools never block)."""
    # A PoolManager takes no proxy from the environment, as the guard needs: it must judge the
    # destination, not a proxy. The CA bundle variables count as they did for requests, else certifi.
    bundle = ca_bundle()
    trust = {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}
    manager = PoolManager(num_pools=HOSTS_KEPT, maxsize=maxsize, block=False, cert_reqs="CERT_REQUIRED", **trust)
    manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
    return manager


@contextmanager
def guarded_call(token: CancelToken, policy: AddressPolicy) -> Iterator[_Call]:
    """Make the connections opened inside the block obey `policy` and stop when `token` is set or
    the call yielded is expired."""
    call = _Call(token, policy)
    reset = _current.set(call)
    try:
        yield call
    finally:
        _current.reset(reset)
        call.close()

"""Circuit breakers per destination host, on pybreaker.

Fail fast: while a host's circuit is open, a request to it raises CircuitOpen at once and sends
nothing; the runner fails the execution with "circuit open for host <host>: ..." and does not
retry it (retrying an open circuit would only burn attempts). After `reset_timeout` seconds the
next request goes through as a probe (half-open): success closes the circuit, failure opens it
again. Only retryable failures count (connection errors, timeouts, 5xx, 429); any other answer,
4xx included, proves the host is up and counts as a success.

The state is per process, as pybreaker keeps it: each gunicorn worker learns that a host is down
from its own few failures. Sharing it through the store would cost a write per request.

pybreaker's `call()` holds the breaker's lock for the whole call, which would serialise every
request to one host; so requests run outside it and only their outcome is reported through it.
Concurrent requests may each probe a half-open circuit; the first outcome decides."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Callable

import pybreaker

from app.metrics import Metrics
from app.models import utcnow

log = logging.getLogger(__name__)

MAX_HOSTS = 1024  # hosts come from user config: forget the least recently used beyond this
_GAUGE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_OPEN: 1, pybreaker.STATE_HALF_OPEN: 2}


class CircuitOpen(Exception):
    """A request was refused without being sent: its host's circuit is open."""

    def __init__(self, host: str, retry_after: float):
        super().__init__(f"circuit open for host {host}: too many consecutive failures, "
                         f"next attempt allowed in {retry_after:.0f} s")
        self.host = host
        self.retry_after = retry_after


class _Failure(Exception):
    """Stands for a failed request when its outcome is reported to pybreaker."""


def _fail() -> None:
    raise _Failure


def _succeed() -> None:
    """Stand for a successful request when its outcome is reported to pybreaker."""


class HostBreakers(pybreaker.CircuitBreakerListener):
    """One lazily created breaker per host; also the listener of all of them."""

    def __init__(self, metrics: Metrics, *, fail_max: int, reset_timeout: float,
                 clock: Callable[[], datetime] = utcnow):
        self._metrics = metrics
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: OrderedDict[str, pybreaker.CircuitBreaker] = OrderedDict()
        # When each circuit opened, on our clock (pybreaker's own timestamp ignores an injected clock).
        self._opened_at: dict[str, datetime] = {}

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state, new_state) -> None:
        """pybreaker's listener hook: note when a circuit opens, keep the gauge in step, log."""
        if new_state.name == pybreaker.STATE_OPEN:
            self._opened_at[cb.name] = self._clock()
        self._metrics.circuit_state.labels(host=cb.name).set(_GAUGE[new_state.name])
        log.warning("circuit %s", new_state.name, extra={"data": {"host": cb.name}})

    def _get(self, host: str) -> pybreaker.CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(host)
            if breaker is None:
                breaker = self._breakers[host] = pybreaker.CircuitBreaker(
                    fail_max=self._fail_max, reset_timeout=self._reset_timeout, listeners=[self], name=host,
                    throw_new_error_on_trip=False)
                if len(self._breakers) > MAX_HOSTS:
                    forgotten, old = self._breakers.popitem(last=False)
                    self._opened_at.pop(forgotten, None)
                    if old.current_state != pybreaker.STATE_CLOSED:
                        # Label removal is unsupported in multiprocess mode: show it closed instead.
                        self._metrics.circuit_state.labels(host=forgotten).set(0)
            self._breakers.move_to_end(host)
            return breaker

    def state(self, host: str) -> str:
        """Return 'closed', 'open' or 'half-open'."""
        return self._get(host).current_state

    def before(self, host: str) -> None:
        """Raise CircuitOpen if `host`'s circuit is open; once its reset timeout has passed, let
        this request through as the probe."""
        breaker = self._get(host)
        if breaker.current_state != pybreaker.STATE_OPEN:
            return
        elapsed = (self._clock() - self._opened_at.get(host, self._clock())).total_seconds()
        if elapsed < self._reset_timeout:
            raise CircuitOpen(host, self._reset_timeout - elapsed)
        breaker.half_open()

    def record(self, host: str, *, failed: bool) -> None:
        """Report the outcome of a request that `before` let through."""
        breaker = self._get(host)
        if breaker.current_state == pybreaker.STATE_OPEN:
            return  # a request sent before the circuit opened tells nothing new
        try:
            breaker.call(_fail if failed else _succeed)
        except (_Failure, pybreaker.CircuitBreakerError):
            pass  # the failure is already counted; these only carry it back out of pybreaker

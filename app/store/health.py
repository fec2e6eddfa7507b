"""Whether the store can write, as this process last saw it: fed by the outcomes of real writes.

A store that still answers reads may refuse every write (a full disk, a read-only remount, a
PostgreSQL standby or a primary in recovery), so readiness must be a write's verdict, not a ping's.
Writing on every /readyz probe would cost a transaction per probe, so the verdict is learnt from the
writes the process makes anyway (claims, outcomes, new executions, the supervisor's heartbeat every
5 s) and a probe write is made only when that evidence is missing or bad:

- while healthy and a write succeeded in the last `stale_after` s: no I/O at all;
- healthy but no write for `stale_after` s (an idle API-only process): one probe write;
- unhealthy: one probe write per `probe_every` s at most, however many callers ask.

Healthy again needs a successful write at least `settle` s after the last failure, so a store that
refuses most writes but lets a few through (SQLite reusing room in its WAL on a full disk) stays
unhealthy instead of flapping."""
from __future__ import annotations

import threading
import time
from typing import Callable

from app.metrics import Metrics
from app.store.base import StoreError

STALE_AFTER = 10.0  # seconds; twice the supervisor's heartbeat, so an engine process never probes
PROBE_EVERY = 1.0
SETTLE = 1.0


class StoreHealth:
    def __init__(self, metrics: Metrics, *, stale_after: float = STALE_AFTER, probe_every: float = PROBE_EVERY,
                 settle: float = SETTLE, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._stale_after, self._probe_every, self._settle = stale_after, probe_every, settle
        self._clock = clock
        self._lock = threading.Lock()
        self._problem: str | None = None  # None: the last writes succeeded
        self._failed_at = self._written_at = -float("inf")
        self._next_probe = -float("inf")

    def written(self) -> None:
        """Note a write that committed."""
        now = self._clock()
        with self._lock:
            self._written_at = now
            if self._problem is not None and now - self._failed_at >= self._settle:
                self._problem = None

    def failed(self, operation: str, error: BaseException) -> None:
        """Note a store call that raised StoreError while doing `operation` (a metrics label)."""
        self._metrics.store_errors.labels(operation=operation).inc()
        with self._lock:
            self._failed_at = self._clock()
            self._problem = " ".join(str(error).split()) or type(error).__name__

    @property
    def problem(self) -> str | None:
        """The last write error while unhealthy, else None; no I/O."""
        with self._lock:
            return self._problem

    def check(self, probe: Callable[[], None]) -> str | None:
        """Return None if the store can write, else what went wrong; `probe()` (a write that raises
        StoreError on failure) runs only as the module docstring says."""
        now = self._clock()
        with self._lock:
            if self._problem is None and now - self._written_at < self._stale_after:
                return None
            if now < self._next_probe or (self._problem is not None and now - self._failed_at < self._settle):
                return self._problem
            self._next_probe = now + self._probe_every  # other callers meanwhile get the current verdict
        try:
            probe()
        except StoreError as error:
            self.failed("probe", error)
        else:
            self.written()
        return self.problem

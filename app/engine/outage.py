"""What an execution does while the store cannot write (a full disk, a database restart or failover).

- Its claim (and the read of its workflow) is retried in its worker, every STORE_RETRY_DELAYS s,
  until the store answers or the engine shuts down: the job keeps its slot, so the engine's queue and
  slot accounting never change, and it runs as soon as the store is back, with no restart.
- An outcome that could not be recorded is parked here, in memory, and the worker moves on: the
  action is not sent again while this process knows its outcome. The engine's housekeeping thread
  calls `flush()` every tick (the supervisor's 0.25 s), which records the parked outcomes in order,
  retrying at most every STORE_RETRY_DELAYS s after a failure.

So, once the store can write again, every parked outcome is recorded and every waiting claim retried
within about 1.25 s (the longest retry pause plus a tick). At shutdown the engine flushes within its
grace; what is still parked then stays `running` under the stopped process and is adopted by the next
one (its action runs again: at-least-once)."""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from app import logutils
from app.engine.cancel import SHUTDOWN, Cancelled, CancelToken
from app.metrics import Metrics
from app.store.base import StoreError
from app.store.health import StoreHealth

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0)  # seconds after the 1st, 2nd, ... failure; then the last, forever


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive store failures (1-based)."""
    return STORE_RETRY_DELAYS[min(failures, len(STORE_RETRY_DELAYS)) - 1]


def _pause(token: CancelToken, seconds: float) -> None:
    """Wait `seconds`, less if the engine shuts down meanwhile."""
    if token.reason is None and not token.cancelled:
        try:
            token.wait(seconds)
        except Cancelled:
            pass
    else:  # cancelled otherwise (a user, a deadline): the store's answer still decides what happens
        time.sleep(seconds)


def until_store_answers(call: Callable[[], T], token: CancelToken, *, operation: str, health: StoreHealth,
                        write: bool = True) -> T:
    """Return `call()`, retrying it while it raises StoreError; raise Cancelled(SHUTDOWN) instead once
    the engine shuts down. `operation` names it in logs and the ipaas_store_errors_total label."""
    failures = 0
    while True:
        try:
            result = call()
        except StoreError as error:
            health.failed(operation, error)
            if token.reason == SHUTDOWN:
                raise Cancelled(SHUTDOWN) from error
            failures += 1
            log.warning(f"store unavailable, retrying the {operation}",
                        extra=logutils.repeated(f"{operation}: {error}", error=str(error)))
            _pause(token, retry_delay(failures))
            continue
        if write:
            health.written()
        return result


@dataclass
class _Parked:
    record: Callable[[], bool]  # the outcome's write: True if recorded, False if no longer ours
    done: Callable[[bool], None]  # logs and metrics, given what `record` answered
    context: contextvars.Context  # the execution's log ids


class ParkedOutcomes:
    """Outcomes waiting for the store, oldest first; thread-safe. The ipaas_outcomes_pending gauge
    follows its length."""

    def __init__(self, metrics: Metrics, health: StoreHealth, *, clock: Callable[[], float] = time.monotonic):
        self._metrics, self._health, self._clock = metrics, health, clock
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: a write must not be made twice
        self._parked: dict[str, _Parked] = {}
        self._failures = 0
        self._next_try = -float("inf")

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)

    def park(self, execution_id: str, record: Callable[[], bool], done: Callable[[bool], None],
             error: StoreError) -> None:
        """Keep an outcome that `record()` could not write (it raised `error`) for `flush`."""
        with self._lock:
            self._parked[execution_id] = _Parked(record, done, contextvars.copy_context())
            self._metrics.outcomes_pending.set(len(self._parked))
        log.warning("execution outcome kept until the store can write",
                    extra=logutils.repeated(str(error), error=str(error)))

    def flush(self) -> int:
        """Record parked outcomes, oldest first, until one fails; return how many were written.
        Does nothing while the pause after a failure runs, or while another flush runs."""
        if self._clock() < self._next_try or not self._flushing.acquire(blocking=False):
            return 0
        try:
            return self._flush()
        finally:
            self._flushing.release()

    def _flush(self) -> int:
        with self._lock:
            waiting = list(self._parked.items())
        written = 0
        for execution_id, parked in waiting:
            try:
                recorded = parked.context.run(parked.record)
            except StoreError as error:
                self._health.failed("outcome", error)
                self._failures += 1
                self._next_try = self._clock() + retry_delay(self._failures)
                log.warning("parked outcomes not recorded yet: store unavailable",
                            extra=logutils.repeated(str(error), error=str(error), pending=len(waiting) - written))
                return written
            self._health.written()
            with self._lock:
                del self._parked[execution_id]
                self._metrics.outcomes_pending.set(len(self._parked))
            parked.context.run(parked.done, recorded)
            written += 1
        self._failures = 0
        return written

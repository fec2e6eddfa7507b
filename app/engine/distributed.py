"""The web side of distributed mode (IPAAS_BROKER_URL set): record, enqueue, answer.

A web process runs no execution. `Services.ingest` records the execution queued with no owner
(`owner_id` is None here) and commits it, then `submit` enqueues its id; `flask --app wsgi worker`
processes (engine/worker.py) claim and run it. The row is the promise: an enqueue that fails (Redis
down or restarting) is logged and the webhook still gets its 202, because the sweeper enqueues every
unowned execution left queued longer than REQUEUE_AFTER seconds again.

Backpressure is shared: the backlog is the number of queued executions in the store, all processes
together, counted at most every BACKLOG_REFRESH seconds per web process (and counted up locally for each
execution it submits in between). At QUEUE_SIZE, a webhook waits up to ENQUEUE_TIMEOUT for it to fall,
then gets 503 with Retry-After (errors.QueueFull), like the thread pool's full queue."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import redis

from app.engine.base import Engine, EngineStats, job_refused
from app.engine.broker import ExecutionQueue
from app.metrics import Metrics
from app.store.base import Store

log = logging.getLogger(__name__)

BACKLOG_REFRESH = 0.5  # seconds a backlog count is trusted
WAIT_POLL = 0.1  # seconds between store reads while waiting for an execution to end


class Backlog:
    """The shared backlog, counted in the store at most every `refresh` seconds."""

    def __init__(self, store: Store, metrics: Metrics, *, refresh: float = BACKLOG_REFRESH,
                 monotonic: Callable[[], float] = time.monotonic):
        self._store = store
        self._metrics = metrics
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._count = 0
        self._counted_at: float | None = None

    def count(self) -> int:
        """The backlog, from the store when the last count is older than `refresh` s (StoreError)."""
        with self._lock:
            now = self._monotonic()
            if self._counted_at is None or now - self._counted_at >= self._refresh:
                self._count = self._store.count_queued()
                self._counted_at = now
                self._metrics.backlog.set(self._count)
            return self._count

    def added(self) -> None:
        """Count one execution this process just enqueued, until the next count from the store."""
        with self._lock:
            self._count += 1


class _Slot:
    def __init__(self, engine: DistributedEngine):
        self._engine = engine

    def submit(self, execution_id: str) -> None:
        self._engine._enqueue(execution_id)


class DistributedEngine(Engine):
    owner_id = None  # executions are recorded unowned: whichever worker claims one owns it

    def __init__(self, store: Store, metrics: Metrics, queue: ExecutionQueue, *, queue_size: int,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        self.capacity = queue_size
        self._store = store
        self._metrics = metrics
        self._queue = queue
        self._sleep = sleep
        self._monotonic = monotonic
        self._backlog = Backlog(store, metrics, monotonic=monotonic)
        self._lock = threading.Lock()
        self._dropped = 0

    @contextmanager
    def slot(self, timeout: float) -> Iterator[_Slot]:
        """Admit one execution while the shared backlog is below QUEUE_SIZE, waiting up to `timeout`."""
        deadline = self._monotonic() + max(0.0, timeout)
        while self._backlog.count() >= self.capacity:
            left = deadline - self._monotonic()
            if left <= 0:
                with self._lock:
                    self._dropped += 1
                raise job_refused(self._metrics, full="backlog", capacity=self.capacity, timeout=timeout)
            self._sleep(min(BACKLOG_REFRESH, left))
        yield _Slot(self)

    def _enqueue(self, execution_id: str) -> None:
        self._backlog.added()
        try:
            self._queue.send(execution_id)
        except redis.RedisError as exc:
            # Recorded and committed: the sweeper enqueues it once Redis is back.
            log.warning("execution recorded but not enqueued: the sweeper will enqueue it",
                        extra={"data": {"execution_id": execution_id, "error": str(exc)}})

    def cancel(self, execution_id: str, reason: str) -> bool:
        """Nudge the workers (the store flag is already set); True if the nudge was published."""
        try:
            self._queue.publish_cancel(execution_id, reason)
        except redis.RedisError as exc:
            log.warning("cancel not published: workers see it in the store within a second",
                        extra={"data": {"execution_id": execution_id, "error": str(exc)}})
            return False
        return True

    def wait(self, execution_id: str, timeout: float) -> bool:
        """Poll the store until the execution is terminal (or gone) or `timeout` passes."""
        deadline = self._monotonic() + timeout
        while True:
            execution = self._store.get_execution(None, execution_id)
            if execution is None or execution.status.terminal:
                return True
            left = deadline - self._monotonic()
            if left <= 0:
                return False
            self._sleep(min(WAIT_POLL, left))

    def stats(self) -> EngineStats:
        """The shared backlog (refreshing the ipaas_backlog gauge when due); busy workers are theirs."""
        with self._lock:
            dropped = self._dropped
        return EngineStats(workers=0, busy=0, queue_length=self._backlog.count(), capacity=self.capacity,
                           dropped=dropped)

    def checks(self) -> dict[str, str]:
        try:
            self._queue.ping()
        except redis.RedisError as exc:
            return {"broker": f"unreachable: {exc}"}
        return {"broker": "ok"}

    def start(self) -> None:
        """Nothing to start: web processes run no executions and own none."""

    def shutdown(self, grace: float) -> None:
        """Close the Redis connections; every execution this process recorded is in the store."""
        self._queue.close()
        self._store.close()

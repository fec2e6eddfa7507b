"""The bounded thread-pool engine: WORKERS threads behind a semaphore of WORKERS + QUEUE_SIZE
slots, so never more jobs are held in memory than that; a full queue is refused, not grown."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator

from app import logutils
from app.engine.base import Engine, EngineStats, job_refused
from app.engine.cancel import SHUTDOWN, CancelToken
from app.engine.http import HttpClient
from app.engine.retention import Retention
from app.engine.runner import Runner
from app.engine.supervisor import Supervisor, SupervisorTiming
from app.errors import Unavailable
from app.metrics import Metrics
from app.models import utcnow
from app.store.base import Store, StoreError

log = logging.getLogger(__name__)


@dataclass
class _Job:
    token: CancelToken = field(default_factory=CancelToken)  # the deadline is set when it starts
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    settled: bool = False  # cancelled before it started, and recorded so: its worker only lets it go
    request_id: str | None = None  # of the request that accepted it, for its log lines


class _Slot:
    """Room for one job; given back on exit unless submitted."""

    def __init__(self, engine: BoundedExecutor):
        self._engine = engine
        self.submitted = False

    def submit(self, execution_id: str) -> None:
        self._engine._submit(execution_id)
        self.submitted = True


class BoundedExecutor(Engine):
    logs_outcome_with_request_id = True  # the job carries the request id to the runner's outcome line

    def __init__(self, store: Store, metrics: Metrics, runner: Runner, client: HttpClient, *, workers: int,
                 queue_size: int, timing: SupervisorTiming | None = None,
                 clock: Callable[[], datetime] = utcnow, retention: Retention | None = None):
        self.owner_id = runner.owner_id
        self.workers = workers
        self.capacity = workers + queue_size
        self._store = store
        self._metrics = metrics
        self._runner = runner
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ipaas-worker")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._open_slots = 0  # slots taken but not yet submitted or given back
        self._queued = self._busy = self._dropped = 0
        self._closed = False  # no new slots
        self._stopped = False  # no new jobs: the pool is shutting down
        self.health = runner.health  # the store's health as this process sees it (supervisor, readyz)
        self._supervisor = Supervisor(self, store, timing or SupervisorTiming(), clock=clock, retention=retention)

    # --- admission ---------------------------------------------------------------------------------
    @contextmanager
    def slot(self, timeout: float) -> Iterator[_Slot]:
        """Reserve room for one job, waiting up to `timeout` s; QueueFull if none frees up."""
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            with self._lock:
                self._dropped += 1
            raise job_refused(self._metrics, full="queue", capacity=self.capacity, timeout=timeout)
        with self._held(1) as slots:
            if not slots:
                raise Unavailable("the engine is shutting down", retry_after=5)
            yield slots[0]

    @contextmanager
    def _held(self, acquired: int) -> Iterator[list[_Slot]]:
        """Turn `acquired` semaphore units into slots (none once closed); give back unsubmitted ones."""
        with self._lock:
            if self._closed:
                for _ in range(acquired):
                    self._slots.release()
                acquired = 0
            self._open_slots += acquired
        slots = [_Slot(self) for _ in range(acquired)]
        try:
            yield slots
        finally:
            for slot in slots:
                if not slot.submitted:
                    self._slots.release()
            with self._lock:
                self._open_slots -= acquired
                self._lock.notify_all()

    @contextmanager
    def free_slots(self, limit: int) -> Iterator[list[_Slot]]:
        """Take up to `limit` free slots without waiting (recovery uses what is free)."""
        acquired = 0
        while acquired < limit and self._slots.acquire(blocking=False):
            acquired += 1
        with self._held(acquired) as slots:
            yield slots

    def _submit(self, execution_id: str) -> None:
        job = _Job(request_id=logutils.current("request_id"))
        with self._lock:
            stopped = self._stopped
            if not stopped:
                if execution_id in self._jobs:
                    raise ValueError(f"execution {execution_id!r} is already in this engine")
                self._jobs[execution_id] = job
                self._queued += 1
        if stopped:
            # A slot held past the shutdown's wait: hand its execution back like the others were.
            self._store.release_executions(self.owner_id)
            raise Unavailable("the engine is shutting down", retry_after=5)
        self._metrics.queue_length.inc()
        self._pool.submit(self._work, execution_id, job)

    def _work(self, execution_id: str, job: _Job) -> None:
        with self._lock:
            job.started = True
            self._queued -= 1
            self._busy += 1
        self._metrics.queue_length.dec()
        self._metrics.workers_busy.inc()
        try:
            if not job.settled:
                # Every execution this engine holds was recorded or adopted under its owner_id.
                self._runner.run(execution_id, job.token, request_id=job.request_id, owned=True)
        finally:
            with self._lock:
                self._busy -= 1
                del self._jobs[execution_id]
                self._lock.notify_all()
            self._metrics.workers_busy.dec()
            job.done.set()
            self._slots.release()

    # --- control -----------------------------------------------------------------------------------
    def cancel(self, execution_id: str, reason: str) -> bool:
        """Set the job's token; one still waiting for a worker is recorded cancelled here and now (its
        row is queued under this owner, which the store only flags: see Store.request_cancel), so a
        cancel does not wait behind the running jobs, and its worker lets it go unsent. While the store
        cannot write, that outcome is parked like any other (Runner.flush_pending records it)."""
        with self._lock:
            job = self._jobs.get(execution_id)
            waiting = job is not None and not job.started and not job.settled
            if waiting:
                job.settled = True
        if job is None:
            return False
        job.token.cancel(reason)
        if waiting:
            self._runner.cancel_unstarted(execution_id, reason)
        return True

    def wait(self, execution_id: str, timeout: float) -> bool:
        with self._lock:
            job = self._jobs.get(execution_id)
        return job is None or job.done.wait(timeout)

    def flush_pending(self) -> int:
        """Record the outcomes the runner parked during a store outage (the supervisor's every tick)."""
        return self._runner.flush_pending()

    def job_tokens(self) -> list[CancelToken]:
        """Tokens of the jobs it holds, running or waiting for a worker: the supervisor expires their
        deadlines (set when a job starts) and delivers the cancels recorded by other processes."""
        with self._lock:
            return [job.token for job in self._jobs.values()]

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(workers=self.workers, busy=self._busy, queue_length=self._queued,
                               capacity=self.capacity, dropped=self._dropped)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._supervisor.start()

    def shutdown(self, grace: float) -> None:
        deadline = time.monotonic() + max(0.0, grace)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # A request that holds a slot is recording its execution: let it submit, so the job is
            # handed back below instead of being left behind under this owner.
            self._lock.wait_for(lambda: self._open_slots == 0, timeout=max(1.0, grace))
            jobs = list(self._jobs.values())
            for job in jobs:
                if not job.started:  # under the lock: a job either started before this or never runs
                    job.token.cancel(SHUTDOWN)
        for job in jobs:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        for job in jobs:
            job.token.cancel(SHUTDOWN)
        with self._lock:
            self._stopped = True
        self._pool.shutdown(wait=True)
        self._supervisor.stop()
        released = self._hand_back(deadline)
        self._client.close()
        self._store.close()  # also reaps the connections of the worker threads, which have ended
        log.info("engine stopped", extra={"data": {"handed_back": released, "owner": self.owner_id}})

    def _hand_back(self, deadline: float) -> int | None:
        """Record parked outcomes within the grace, then hand every unfinished execution back. If the
        store cannot take them, leave everything under this owner, registered: the next process adopts
        it once this one is gone (a parked action then runs again: at-least-once). None if so."""
        if self._runner.flush_until(deadline):
            log.warning("engine stopping with outcomes not recorded: left running under this process",
                        extra={"data": {"pending": self._runner.pending, "error": self.health.problem}})
            return None
        try:
            released = self._store.release_executions(self.owner_id)
            self._store.remove_worker(self.owner_id)  # only once nothing is left under it
        except StoreError as error:
            log.warning("engine stopping without handing back: store unavailable",
                        extra={"data": {"error": str(error)}})
            return None
        return released

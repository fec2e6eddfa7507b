"""A worker process of distributed mode: take execution ids from Redis and run them with the Runner.

Dramatiq's `Worker` is embedded here (not the dramatiq CLI, whose process forking, signal handling and
global broker this process does not want): it fetches messages and calls `_process` in one of `threads`
threads, and acknowledges the message when `_process` returns, whatever the execution's outcome. The
Runner claims the execution in the store (atomically), so a redelivered or duplicated message whose
execution runs elsewhere or has finished finds nothing to claim and is dropped. Job timeout, retries
with backoff, circuit breakers and the SSRF guard are the Runner's and its HttpClient's, as in the pool.

The supervisor thread (SweepingSupervisor) expires deadlines, polls the store for cancels, heart-beats
and sweeps; a cancel published by a web process reaches the job at once through the CancelListener.

Shutdown (SIGTERM): take no more messages, give running executions `grace` seconds, then cancel them
with SHUTDOWN; the Runner leaves them unfinished, they go back to queued with no owner
(`release_executions`) and are enqueued again for another worker. Outcomes the Runner parked during a
store outage are recorded every supervisor tick and, at shutdown, within the grace; if some cannot be,
nothing is handed back: the sweeper of another worker releases them once this one's heartbeat is stale. Messages fetched but not started are
put back on the queue by Dramatiq's `Worker.stop`."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Callable

import dramatiq
import redis

from app.engine.broker import CancelListener, ExecutionQueue
from app.engine.cancel import SHUTDOWN, CancelToken
from app.engine.http import HttpClient
from app.engine.runner import Runner
from app.engine.retention import Retention
from app.engine.supervisor import SupervisorTiming
from app.engine.sweeper import Sweeper, SweepingSupervisor
from app.metrics import Metrics
from app.models import utcnow
from app.store.base import Store, StoreError

log = logging.getLogger(__name__)

POLL_MS = 200  # longest idle wait of Dramatiq's consumer and worker threads: the pickup latency when idle
STOP_MARGIN = 5.0  # seconds Dramatiq gets to stop its threads once the executions have returned


class ExecutionWorker:
    def __init__(self, store: Store, metrics: Metrics, runner: Runner, client: HttpClient, queue: ExecutionQueue,
                 *, threads: int, timing: SupervisorTiming, sweeper: Sweeper,
                 clock: Callable[[], datetime] = utcnow, retention: Retention | None = None):
        self.owner_id = runner.owner_id
        self.health = runner.health  # the store's health as this process sees it (the supervisor feeds it)
        self.threads = threads
        self._store = store
        self._metrics = metrics
        self._runner = runner
        self._client = client
        self._queue = queue
        self._cond = threading.Condition()
        self._jobs: dict[str, CancelToken] = {}
        self._handed_back: list[str] = []
        self._closing = False
        self._dramatiq = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=POLL_MS)
        queue.declare_actor(self._process)
        self._supervisor = SweepingSupervisor(self, store, timing, sweeper, clock=clock, retention=retention)
        self._listener = CancelListener(queue.client, self.cancel)

    def _process(self, execution_id: str) -> None:
        """The actor: run one execution; never raises (a raise would dead-letter the message)."""
        token = CancelToken()
        with self._cond:
            closing, duplicate = self._closing, execution_id in self._jobs
            if not (closing or duplicate):
                self._jobs[execution_id] = token
        if duplicate:  # a second message while this process runs it: the claim would refuse it anyway
            return
        if closing:  # taken off the queue as the worker stops: put it back for another one
            self._enqueue_again([execution_id])
            return
        self._metrics.workers_busy.inc()
        try:
            self._runner.run(execution_id, token)
        finally:
            self._metrics.workers_busy.dec()
            with self._cond:
                del self._jobs[execution_id]
                if token.reason == SHUTDOWN:
                    self._handed_back.append(execution_id)
                self._cond.notify_all()

    def job_tokens(self) -> list[CancelToken]:
        with self._cond:
            return list(self._jobs.values())

    def cancel(self, execution_id: str, reason: str) -> bool:
        """Set the execution's token if this process runs it."""
        with self._cond:
            token = self._jobs.get(execution_id)
        return token is not None and token.cancel(reason)

    def flush_pending(self) -> int:
        """Record the outcomes the runner parked during a store outage (the supervisor's every tick)."""
        return self._runner.flush_pending()

    def busy(self) -> int:
        with self._cond:
            return len(self._jobs)

    def start(self) -> None:
        """Register (heartbeat) and sweep once, then consume and listen for cancels."""
        self._supervisor.start()
        self._listener.start()
        self._dramatiq.start()
        log.info("worker started", extra={"data": {"owner": self.owner_id, "threads": self.threads}})

    def shutdown(self, grace: float) -> None:
        """Stop taking messages, let running executions finish for up to `grace` s, hand back the rest."""
        deadline = time.monotonic() + max(0.0, grace)
        with self._cond:
            if self._closing:
                return
            self._closing = True
        stopper = threading.Thread(target=self._dramatiq.stop, name="ipaas-dramatiq-stop", daemon=True,
                                   kwargs={"timeout": int((max(0.0, grace) + STOP_MARGIN) * 1000)})
        stopper.start()  # its worker threads finish their message, then exit: no new ones are taken
        with self._cond:
            self._cond.wait_for(lambda: not self._jobs, timeout=max(0.0, grace))
            late = list(self._jobs.values())
        for token in late:
            token.cancel(SHUTDOWN)  # shuts their sockets: the Runner returns at once, leaving them unfinished
        stopper.join(STOP_MARGIN + 1.0)
        self._listener.stop()
        self._supervisor.stop()
        with self._cond:
            handed_back = list(self._handed_back)
        if self._runner.flush_until(deadline):
            log.warning("executions not handed back: outcomes not recorded, the store is unavailable; the "
                        "sweeper of another worker releases them once this process's heartbeat is stale",
                        extra={"data": {"pending": self._runner.pending, "error": self.health.problem}})
        else:
            try:
                self._store.release_executions(self.owner_id)
                self._store.remove_worker(self.owner_id)
            except StoreError:
                log.warning("executions not handed back: the store is unavailable; the sweeper of another "
                            "worker releases them once this process's heartbeat is stale")
        self._enqueue_again(handed_back)
        self._client.close()
        self._queue.close()
        self._store.close()
        log.info("worker stopped", extra={"data": {"owner": self.owner_id, "handed_back": len(handed_back),
                                                   "still_running": len(late) - len(handed_back)}})

    def _enqueue_again(self, execution_ids: list[str]) -> None:
        try:
            for execution_id in execution_ids:
                self._queue.send(execution_id)
        except redis.RedisError as exc:
            log.warning("executions handed back but not enqueued: the sweeper will enqueue them",
                        extra={"data": {"count": len(execution_ids), "error": str(exc)}})


"""Recovery in distributed mode: the store is the truth, the Redis queue only a hint.

Every worker process sweeps from its supervisor thread (each RECOVER_INTERVAL, 1 s by default); a Redis
lease lets one of them act at a time. A pass:
1. releases (`Store.release_executions`: back to queued, no owner) every execution of each worker process
   that stopped heart-beating for WORKER_DEAD_AFTER seconds, or whose pid is gone on this host, and
   forgets that process;
2. enqueues again each unowned execution queued for longer than REQUEUE_AFTER seconds (every one at once
   after a release), at most once per REQUEUE_AFTER from one sweeper: a message lost with a killed web
   process, a Redis restart or FLUSHALL, or held by a dead consumer that Dramatiq would redeliver only
   after its heartbeat_timeout and a random maintenance pass (engine/broker.py).
The duplicate messages this can make are harmless: the claim is atomic, and a message whose execution is
not queued any more is acknowledged and dropped."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable

import redis

from app.engine.broker import ExecutionQueue
from app.engine.retention import Retention
from app.engine.supervisor import Supervised, Supervisor, SupervisorTiming
from app.models import utcnow
from app.store.base import Store

log = logging.getLogger(__name__)

LEASE = "sweeper"
SWEEP_LIMIT = 500  # executions enqueued per pass at most; a fuller pass comes again next tick


class Sweeper:
    def __init__(self, store: Store, queue: ExecutionQueue, *, holder: str, requeue_after: float, lease_ttl: float,
                 limit: int = SWEEP_LIMIT, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic):
        self._store = store
        self._queue = queue
        self._holder = holder
        self._requeue_after = requeue_after
        self._lease_ttl = lease_ttl
        self._limit = limit
        self._clock = clock
        self._monotonic = monotonic
        self._sent: dict[str, float] = {}  # execution id -> when this sweeper last enqueued it
        self._failing = False

    def sweep(self, dead: list[str]) -> bool:
        """One pass, given the ids of dead worker processes; True if more may wait than one pass took."""
        try:
            if not self._queue.hold_lease(LEASE, self._holder, self._lease_ttl):
                return False
        except redis.RedisError as exc:
            self._broker_down(exc)
            return False
        self._failing = False
        released = 0
        for worker_id in dead:
            count = self._store.release_executions(worker_id)
            self._store.remove_worker(worker_id)
            log.info("released the executions of a dead worker", extra={"data": {"worker": worker_id,
                                                                                  "count": count}})
            released += count
        if released:
            self._sent.clear()  # a released execution needs a message even if it was sent a moment ago
        now = self._clock()
        # After a release, everything (the slack covers web processes whose clocks run a little ahead).
        cutoff = now + timedelta(seconds=self._requeue_after * (1 if released else -1))
        waiting = self._store.queued_unowned(created_before=cutoff, limit=self._limit)
        self._send(waiting)
        return len(waiting) == self._limit

    def _send(self, waiting: list[str]) -> None:
        now = self._monotonic()
        self._sent = {eid: at for eid, at in self._sent.items() if now - at < self._requeue_after}
        due = [execution_id for execution_id in waiting if execution_id not in self._sent]
        sent = 0
        try:
            for execution_id in due:
                self._queue.send(execution_id)
                self._sent[execution_id] = now
                sent += 1
        except redis.RedisError as exc:
            self._broker_down(exc)
        if sent:
            log.info("enqueued waiting executions again", extra={"data": {"count": sent}})

    def _broker_down(self, exc: redis.RedisError) -> None:
        if not self._failing:  # one line per outage
            log.warning("sweeper cannot reach the broker", extra={"data": {"error": str(exc)}})
        self._failing = True


class SweepingSupervisor(Supervisor):
    """The supervisor of a worker process: deadlines, cancels and heartbeats as in the pool, and a sweep
    where the pool adopts orphans."""

    def __init__(self, engine: Supervised, store: Store, timing: SupervisorTiming, sweeper: Sweeper, *,
                 clock: Callable[[], datetime] = utcnow, retention: Retention | None = None):
        super().__init__(engine, store, timing, clock=clock, retention=retention)
        self._sweeper = sweeper

    def recover(self) -> None:
        self._schedule_recovery()  # first: a failing pass is retried at the normal pace, not every tick
        now = self._clock()
        dead = [worker.id for worker in self._store.list_workers() if self._dead(worker, now)]
        self._backlog = self._sweeper.sweep(dead)
        self._schedule_recovery()

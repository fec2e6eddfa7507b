"""The engine's supervisor thread: job deadlines, cross-process cancels, heartbeats, crash recovery,
and the retention purge (engine/retention.py) one batch per round.

Shared by both engines: the thread pool recovers by adopting orphans (`recover` here), a distributed
worker process by sweeping (engine/sweeper.py overrides `recover`).

A cancel requested through another gunicorn process is only recorded in the store; polling
`cancel_requests` here is how it reaches the job. Executions owned by a process that died (no
heartbeat for `dead_after` s, or a pid on this host that no longer exists) are adopted, as are
the unowned ones a clean shutdown handed back: delivery is at-least-once."""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol

from app.engine.cancel import CancelToken
from app.engine.rounds import Rounds
from app.models import utcnow
from app.store.base import Store, StoreError, WorkerRecord
from app.store.health import StoreHealth

if TYPE_CHECKING:
    from app.engine.pool import BoundedExecutor
    from app.engine.retention import Retention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisorTiming:
    tick: float = 0.25  # seconds between rounds: deadlines and cancels take effect within this
    heartbeat_every: float = 5.0
    dead_after: float = 30.0  # a heartbeat older than this marks its process dead
    recover_every: float = 1.0


def pid_alive(pid: int) -> bool:
    """Tell whether a process with this pid runs on this host. A zombie does not: a gunicorn worker
    whose master was killed with it is reparented to PID 1, and a container's PID 1 may reap it late
    or never, which would hold its executions until its heartbeat goes stale (30 s)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'.
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (not Linux), or the process just went
        return True


class Supervised(Protocol):
    """What the supervisor needs of an engine (recovery aside)."""

    owner_id: str
    health: StoreHealth  # its runner's: fed the heartbeats' outcomes

    def job_tokens(self) -> list[CancelToken]: ...

    def cancel(self, execution_id: str, reason: str) -> bool: ...

    def flush_pending(self) -> int:
        """Record what its runner held back: outcomes parked during a store outage, `running` for
        executions started without a claim (Runner.flush_pending)."""


class Supervisor:
    def __init__(self, engine: BoundedExecutor | Supervised, store: Store, timing: SupervisorTiming, *,
                 clock: Callable[[], datetime] = utcnow, retention: Retention | None = None):
        self._engine = engine
        self._retention = retention
        self._store = store
        self._timing = timing
        self._clock = clock
        self._host = socket.gethostname()
        self._rounds = Rounds("ipaas-supervisor", timing.tick, self.tick, store)
        self._next_heartbeat = self._next_recovery = 0.0
        self._backlog = False  # the last recovery round filled every free slot

    def start(self) -> None:
        """Register this process and recover orphans at once, then run the loop in a daemon thread. A
        process that starts while the store cannot write (a gunicorn worker restarted during an outage)
        still starts: its ticks register and recover once the store answers."""
        try:
            self.heartbeat()
            self.recover()
        except StoreError as error:
            log.warning("store unavailable at start: registering once it answers", extra={"data": {"error": str(error)}})
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def tick(self) -> None:
        """One round: record parked outcomes, expire deadlines, deliver store cancels, heartbeat and
        recover when due, purge."""
        self._engine.flush_pending()
        tokens = self._engine.job_tokens()
        for token in tokens:
            token.expire()  # shuts down its sockets, so even a job blocked in a read times out
        if tokens:
            for execution_id, by in self._store.cancel_requests(self._engine.owner_id):
                self._engine.cancel(execution_id, by)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self.heartbeat()
        if now >= self._next_recovery:
            self.recover()
        if self._retention is not None:
            self._retention.tick()

    def heartbeat(self) -> None:
        """Refresh this process's record; after a failure it is tried again every tick, so that the
        others do not take this live process for dead once the store is back."""
        try:
            self._store.heartbeat(WorkerRecord(self._engine.owner_id, self._host, os.getpid(), self._clock()))
        except StoreError as error:
            self._engine.health.failed("heartbeat", error)
            raise
        self._engine.health.written()
        self._next_heartbeat = time.monotonic() + self._timing.heartbeat_every

    def _dead(self, worker: WorkerRecord, now: datetime) -> bool:
        if worker.id == self._engine.owner_id:
            return False
        if (now - worker.heartbeat_at).total_seconds() > self._timing.dead_after:
            return True
        return worker.host == self._host and not pid_alive(worker.pid)

    def recover(self) -> None:
        """Adopt orphaned executions into the free slots; forget dead processes left owning nothing.

        While orphans outnumber the free slots (the last round filled them all), rounds come every tick
        instead of every recover_every, so a backlog drains at the engine's pace."""
        self._schedule_recovery()
        with self._engine.free_slots(self._engine.capacity) as slots:
            if not slots:
                return
            now = self._clock()
            dead = [worker.id for worker in self._store.list_workers() if self._dead(worker, now)]
            adopted = self._store.adopt_orphans(self._engine.owner_id, dead_owners=dead, limit=len(slots))
            for slot, execution in zip(slots, adopted):
                slot.submit(execution.id)
        if adopted:
            log.info("adopted orphaned executions", extra={"data": {"count": len(adopted), "dead_owners": dead}})
        self._backlog = len(adopted) == len(slots)
        self._schedule_recovery()
        if not self._backlog:  # nothing is left to adopt from them
            for worker_id in dead:
                self._store.remove_worker(worker_id)
                log.info("removed dead worker", extra={"data": {"worker": worker_id}})

    def _schedule_recovery(self) -> None:
        pause = self._timing.tick if self._backlog else self._timing.recover_every
        self._next_recovery = time.monotonic() + pause

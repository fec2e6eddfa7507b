"""The scheduler: a thread in every process that runs an engine, firing the due slots of schedules.

Every `tick` seconds it lists the enabled schedule workflows and, for each, takes the most recent slot at
or before now (schedules.py). That slot fires unless it is older than the schedule itself (`active_from`:
created, re-enabled or its cron changed after it) or was fired already. Firing records the execution with
`trigger: "schedule"` and payload `{"scheduled_at": "<slot, RFC 3339 UTC>"}` through
`Store.create_scheduled_execution`, which claims the unique (workflow, slot) row in the same
transaction: however many processes (or machines) see the slot due, one execution is recorded.

Missed slots: after downtime only the most recent slot fires, once; the older ones are skipped (n8n's
default). The most recent slot at or before now is always less than one period old (the next one is still
to come), so "fires if less than one period old" needs no test of its own. A full queue leaves the slot
unfired; the next tick tries again."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from app import logutils, schedules
from app.engine.base import Engine
from app.engine.rounds import Rounds
from app.errors import QueueFull, Unavailable
from app.models import Execution, ExecutionStatus, Workflow, new_id, utcnow
from app.schedules import scheduled_at
from app.store.base import Store

log = logging.getLogger(__name__)


def offset_clock(seconds: float) -> Callable[[], datetime]:
    """A UTC clock `seconds` ahead of the real one (a test knob: SCHEDULER_CLOCK_OFFSET)."""
    return lambda: utcnow() + timedelta(seconds=seconds)


class Scheduler:
    def __init__(self, store: Store, engine: Engine, *, tick: float = 1.0, enqueue_timeout: float = 1.0,
                 clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._engine = engine
        self._enqueue_timeout = enqueue_timeout
        self._clock = clock
        self._fired: dict[str, datetime] = {}  # workflow id -> newest slot seen claimed, by anyone
        self._rounds = Rounds("ipaas-scheduler", tick, self.tick, store)

    def start(self) -> None:
        """Fire due slots every `tick` seconds in a daemon thread."""
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def tick(self) -> list[Execution]:
        """One round: fire every due slot; return the executions this process recorded."""
        now = self._clock()
        fired, seen = [], {}
        for workflow in self._store.list_scheduled_workflows():
            slot = self._due(workflow, now)
            seen[workflow.id] = self._fired.get(workflow.id)
            if slot is None:
                continue
            try:
                execution = self._fire(workflow, slot, now)
            except (QueueFull, Unavailable):
                continue  # the engine has no room: the next tick tries the slot again
            seen[workflow.id] = slot
            if execution is not None:
                fired.append(execution)
        self._fired = {key: value for key, value in seen.items() if value is not None}
        return fired

    def _due(self, workflow: Workflow, now: datetime) -> datetime | None:
        if workflow.schedule is None:
            return None
        slot = schedules.from_json(workflow.schedule).latest_at_or_before(now)
        if slot is None or slot < schedules.active_from(workflow.schedule):
            return None
        last = self._fired.get(workflow.id)
        return None if last is not None and last >= slot else slot

    def _fire(self, workflow: Workflow, slot: datetime, now: datetime) -> Execution | None:
        execution = Execution(id=new_id("ex", now), tenant_id=workflow.tenant_id, workflow_id=workflow.id,
                              status=ExecutionStatus.QUEUED, trigger="schedule", created_at=now,
                              payload={"scheduled_at": scheduled_at(slot)}, owner=self._engine.owner_id)
        with self._engine.slot(self._enqueue_timeout) as room:
            created = self._store.create_scheduled_execution(execution, slot=slot)
            if created is not None:
                room.submit(created.id)
        data = {"slot": scheduled_at(slot), "worker": self._engine.owner_id}
        with logutils.bind(tenant_id=workflow.tenant_id, workflow_id=workflow.id):
            if created is not None:
                with logutils.bind(execution_id=created.id):
                    log.info("schedule fired", extra={"data": data})
            else:
                log.info("schedule slot already fired", extra={"data": data})
        return created

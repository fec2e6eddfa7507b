"""Retention: old finished executions go in small batches, one process at a time, on an injected clock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.engine import create_engine
from app.engine.retention import CHECK_EVERY, Retention
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, User, Workflow, new_id
from app.store import MemoryStore, PostgresStore, SqliteStore, Store
from tests.serverproc import wait_until

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path) -> Store:
    if request.param == "postgres":
        backend: Store = PostgresStore(request.getfixturevalue("postgres_url"), pool_size=2)
    else:
        backend = MemoryStore() if request.param == "memory" else SqliteStore(str(tmp_path / "ipaas.sqlite3"))
    backend.init_schema()
    yield backend
    backend.shutdown()


def add_executions(store: Store, count: int, age_days: float, status=ExecutionStatus.SUCCEEDED) -> list[str]:
    created_at = NOW - timedelta(days=age_days)
    tenant = store.ensure_tenant("acme", tenant_id="tn_1", now=created_at)
    if store.get_workflow(None, "wf_1") is None:
        store.create_user(User(id="usr_1", tenant_id=tenant.id, email="a@x.test", created_at=created_at))
        store.create_workflow(Workflow(id="wf_1", tenant_id=tenant.id, user_id="usr_1", name="w",
                                       trigger_type="webhook", action_type="http_request",
                                       config={"url": "http://x.test"}, enabled=True,
                                       created_at=created_at, updated_at=created_at))
    ids = []
    for _ in range(count):
        execution = Execution(id=new_id("ex", created_at), tenant_id=tenant.id, workflow_id="wf_1",
                              status=ExecutionStatus.QUEUED, trigger="webhook", payload={}, created_at=created_at)
        store.create_execution(execution)
        if status is not ExecutionStatus.QUEUED:
            store.claim_execution(execution.id, owner="proc-a", now=created_at)
            if status is not ExecutionStatus.RUNNING:
                store.finish_execution(execution.id, owner="proc-a", status=status, attempts=1, now=created_at)
        ids.append(execution.id)
    return ids


def remaining(store: Store) -> set[str]:
    return {e.id for e in store.list_executions(None, limit=200).items}


def test_retention_deletes_old_finished_executions_a_batch_per_tick(store):
    old = add_executions(store, 5, age_days=31)
    old_failed = add_executions(store, 1, age_days=40, status=ExecutionStatus.FAILED)
    old_active = add_executions(store, 1, age_days=40, status=ExecutionStatus.RUNNING)
    young = add_executions(store, 2, age_days=29)
    retention = Retention(store, days=30, batch=2, clock=Clock())

    assert [retention.tick() for _ in range(4)] == [2, 2, 2, 0]

    assert remaining(store) == set(old_active + young)
    assert not set(old + old_failed) & remaining(store)
    assert retention.tick() == 0 and not retention.running  # the next run waits for the interval


def test_retention_zero_days_keeps_everything(store):
    old = add_executions(store, 3, age_days=3650)
    retention = Retention(store, days=0, batch=2, clock=Clock())

    assert retention.tick() == 0

    assert remaining(store) == set(old)


def test_retention_runs_in_one_process_per_interval(store):
    clock = Clock()
    first, second = (Retention(store, days=30, interval=3600, batch=10, clock=clock) for _ in range(2))
    add_executions(store, 3, age_days=31)

    assert first.tick() == 3
    assert second.tick() == 0 and not second.running  # the token is taken: no run starts here

    add_executions(store, 2, age_days=31)
    clock.advance(seconds=CHECK_EVERY.total_seconds())
    assert first.tick() == second.tick() == 0  # asked again a minute later: still within the hour

    clock.advance(hours=1)
    assert first.tick() + second.tick() == 2  # one of them, once
    assert not remaining(store)


def test_retention_cutoff_is_taken_when_the_run_starts(store):
    clock = Clock()
    retention = Retention(store, days=30, batch=1, clock=clock)
    add_executions(store, 2, age_days=30.5)

    assert retention.tick() == 1
    clock.advance(days=1)  # the run goes on with the cutoff it started with
    young = add_executions(store, 1, age_days=29.9)  # 29.9 days before NOW: 30.9 by the clock

    assert retention.tick() == 1
    assert retention.tick() == 0
    assert remaining(store) == set(young)


def test_retention_is_driven_by_the_engine_supervisor(store):
    old = add_executions(store, 3, age_days=31)
    young = add_executions(store, 1, age_days=1)
    engine = create_engine(store, {"EXECUTION_RETENTION_DAYS": "30", "SUPERVISOR_TICK": 0.01, "WORKERS": 1},
                           Metrics(), clock=Clock())
    engine.start()
    try:
        wait_until(lambda: not set(old) & remaining(store), 5, "the old executions to be purged")
    finally:
        engine.shutdown(grace=0)

    assert remaining(store) == set(young)

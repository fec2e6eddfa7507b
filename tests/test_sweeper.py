"""The distributed engine's logic on the memory store, with injected clocks: the sweeper, the shared
backlog and the web side's enqueue. The real processes are in test_distributed.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.engine.distributed import DistributedEngine
from app.engine.supervisor import SupervisorTiming
from app.engine.sweeper import Sweeper, SweepingSupervisor
from app.errors import QueueFull
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, User, Workflow, new_id
from app.store import MemoryStore, WorkerRecord
from tests.fakes import RecordingQueue

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
REQUEUE_AFTER = 10.0


class Clocks:
    def __init__(self) -> None:
        self.now, self.mono = T0, 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.init_schema()
    return store


@pytest.fixture
def workflow(store) -> Workflow:
    tenant = store.ensure_tenant("acme", tenant_id=new_id("tn"), now=T0)
    user = store.create_user(User(id=new_id("usr"), tenant_id=tenant.id, email="a@example.com", created_at=T0))
    return store.create_workflow(Workflow(new_id("wf"), tenant.id, user.id, "w", "webhook", "http_request",
                                          {"url": "https://example.com"}, True, T0, T0))


def record(store: MemoryStore, workflow: Workflow, at: datetime, owner: str | None = None) -> str:
    execution = Execution(new_id("ex", at), workflow.tenant_id, workflow.id, ExecutionStatus.QUEUED, "webhook",
                          {}, at, owner=owner)
    return store.create_execution(execution)[0].id


def sweeper(store, queue, clocks, holder: str = "wrk_me") -> Sweeper:
    return Sweeper(store, queue, holder=holder, requeue_after=REQUEUE_AFTER, lease_ttl=3.0, limit=3,
                   clock=lambda: clocks.now, monotonic=lambda: clocks.mono)


def test_sweeper_enqueues_only_what_waited_longer_than_requeue_after(store, workflow, clocks):
    queue = RecordingQueue()
    old = record(store, workflow, T0)
    clocks.advance(REQUEUE_AFTER)
    young = record(store, workflow, clocks.now)
    clocks.advance(1)
    sweep = sweeper(store, queue, clocks)

    assert sweep.sweep([]) is False
    assert queue.sent == [old]
    clocks.advance(1)
    sweep.sweep([])
    assert queue.sent == [old]  # not again within REQUEUE_AFTER
    clocks.advance(REQUEUE_AFTER)
    sweep.sweep([])
    assert queue.sent == [old, old, young]


def test_sweeper_releases_a_dead_workers_executions_and_enqueues_them_at_once(store, workflow, clocks):
    queue = RecordingQueue()
    running = record(store, workflow, T0)
    store.claim_execution(running, owner="wrk_dead", now=T0)
    store.heartbeat(WorkerRecord("wrk_dead", "elsewhere", 1, T0))

    sweeper(store, queue, clocks).sweep(["wrk_dead"])

    execution = store.get_execution(None, running)
    assert (execution.status, execution.owner) == (ExecutionStatus.QUEUED, None)
    assert queue.sent == [running]
    assert store.list_workers() == []


def test_sweeper_does_nothing_without_the_lease(store, workflow, clocks):
    queue = RecordingQueue()
    queue.lease_holder = "wrk_other"
    record(store, workflow, T0)
    clocks.advance(REQUEUE_AFTER + 1)
    assert sweeper(store, queue, clocks).sweep(["wrk_dead"]) is False
    assert queue.sent == []


def test_sweeper_survives_a_lost_broker_and_sends_once_it_is_back(store, workflow, clocks):
    queue = RecordingQueue()
    waiting = record(store, workflow, T0)
    clocks.advance(REQUEUE_AFTER + 1)
    sweep = sweeper(store, queue, clocks)
    queue.down = True
    sweep.sweep([])
    queue.down = False
    sweep.sweep([])
    assert queue.sent == [waiting]


def test_sweeper_reports_a_backlog_when_a_pass_is_full(store, workflow, clocks):
    queue = RecordingQueue()
    for _ in range(4):
        record(store, workflow, T0)
    clocks.advance(REQUEUE_AFTER + 1)
    assert sweeper(store, queue, clocks).sweep([]) is True  # limit 3
    assert len(queue.sent) == 3


class Worker:
    owner_id = "wrk_me"

    def job_tokens(self) -> list:
        return []

    def cancel(self, execution_id: str, reason: str) -> bool:
        return False


def test_sweeping_supervisor_counts_a_stale_heartbeat_as_dead(store, workflow, clocks):
    queue = RecordingQueue()
    timing = SupervisorTiming(heartbeat_every=2, dead_after=10)
    running = record(store, workflow, T0)
    store.claim_execution(running, owner="wrk_far", now=T0)
    store.heartbeat(WorkerRecord("wrk_far", "another-host", 1, T0))
    supervisor = SweepingSupervisor(Worker(), store, timing, sweeper(store, queue, clocks), clock=lambda: clocks.now)

    clocks.advance(9)
    supervisor.recover()
    assert store.get_execution(None, running).status is ExecutionStatus.RUNNING
    clocks.advance(2)
    supervisor.recover()
    assert store.get_execution(None, running).status is ExecutionStatus.QUEUED
    assert queue.sent == [running]


def engine(store, queue, clocks, queue_size: int = 2) -> DistributedEngine:
    return DistributedEngine(store, Metrics(), queue, queue_size=queue_size, sleep=clocks.sleep,
                             monotonic=lambda: clocks.mono)


def test_distributed_engine_refuses_with_queue_full_after_waiting_for_the_backlog(store, workflow, clocks):
    queue = RecordingQueue()
    web = engine(store, queue, clocks)
    for _ in range(2):
        with web.slot(1.0) as slot:
            slot.submit(record(store, workflow, T0))
    started = clocks.mono
    with pytest.raises(QueueFull) as refused:
        with web.slot(1.5):
            pass
    assert refused.value.retry_after == 2.0
    assert clocks.mono - started == pytest.approx(1.5)
    assert web.stats().dropped == 1 and web.stats().queue_length == 2


def test_distributed_engine_admits_again_once_the_backlog_falls(store, workflow, clocks):
    queue = RecordingQueue()
    web = engine(store, queue, clocks, queue_size=1)
    with web.slot(1.0) as slot:
        first = record(store, workflow, T0)
        slot.submit(first)
    store.claim_execution(first, owner="wrk_1", now=T0)  # a worker took it: the backlog is empty again
    with web.slot(5.0) as slot:
        slot.submit(record(store, workflow, T0))
    assert len(queue.sent) == 2


def test_distributed_engine_counts_its_own_submissions_between_store_counts(store, workflow, clocks):
    web = engine(store, RecordingQueue(), clocks, queue_size=1)
    web.stats()  # counted: 0
    with web.slot(0.0) as slot:
        slot.submit("ex_recorded_elsewhere")  # not in the store: only the local count knows it
    with pytest.raises(QueueFull):
        with web.slot(0.0):
            pass


def test_distributed_engine_keeps_the_promise_when_the_enqueue_fails(store, workflow, clocks):
    queue = RecordingQueue()
    queue.down = True
    web = engine(store, queue, clocks)
    with web.slot(1.0) as slot:
        slot.submit(record(store, workflow, T0))  # logged, not raised: the sweeper enqueues it later
    assert web.checks()["broker"].startswith("unreachable")
    assert web.cancel("ex_1", "api:usr_1") is False


def test_distributed_engine_wait_polls_the_store_until_terminal(store, workflow, clocks):
    queue = RecordingQueue()
    web = engine(store, queue, clocks)
    execution_id = record(store, workflow, T0)
    assert web.wait(execution_id, 0.3) is False
    store.request_cancel(workflow.tenant_id, execution_id, by="api:usr_1", now=T0)
    assert web.wait(execution_id, 0.3) is True
    assert web.owner_id is None

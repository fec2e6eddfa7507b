"""Store outages in the fast suite: a store that refuses claims, outcomes or every write for a while
(tests/fakes.py FailingStore over the memory store), the engine's recovery, readiness, logs, metrics.
The real full disk is in test_outage_disk.py."""
from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest

from app import create_app, logutils, shutdown_app
from app.engine import create_worker
from app.engine.broker import ExecutionQueue
from app.metrics import Metrics
from app.models import ExecutionStatus
from app.store import MemoryStore, StoreError
from app.store.health import StoreHealth
from tests.conftest import TEST_SECRET_KEY, make_account
from tests.dashboard import sign_in
from tests.fakes import FailingStore
from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.serverproc import wait_until
from tests.test_engine import TAKE, Bench

QUEUED, RUNNING, SUCCEEDED = ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED
# README "Store outages": once the store can write again, parked outcomes are recorded and waiting
# claims retried within about 1.25 s (the longest retry pause, 1 s, plus a supervisor tick).
RECOVERY_BOUND = 2.0


@pytest.fixture
def memory() -> MemoryStore:
    store = MemoryStore()
    store.init_schema()
    return store


class Outage:
    """`store` with every one of `methods` refused (one FailingStore per method) from `begin()`
    (at once unless `later`) until `end()`."""

    def __init__(self, store, *methods: str, later: bool = False) -> None:
        self.wrappers = []
        for method in methods:
            store = FailingStore(store, method, failures=0 if later else None)
            self.wrappers.append(store)
        self.store = store

    def begin(self) -> None:
        for wrapper in self.wrappers:
            wrapper.failures = None

    def end(self) -> None:
        for wrapper in self.wrappers:
            wrapper.failures = 0


def free_slots(engine) -> int:
    with engine.free_slots(engine.capacity) as slots:
        return len(slots)


# --- the engine ----------------------------------------------------------------------------------------
def test_outcome_refused_for_a_while_is_recorded_later_and_the_action_sent_once(memory, receiver):
    outage = Outage(memory, "finish_execution")
    bench = Bench(outage.store)
    engine = bench.engine(WORKERS=1, QUEUE_SIZE=1)
    execution_id = bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")}))
    wait_until(lambda: bench.metric(engine, "ipaas_store_errors_total", {"operation": "outcome"}) >= 3, 5,
               "the parked outcome was never retried")
    assert engine.wait(execution_id, 1.0)  # the worker moved on: the outcome waits in memory, not in a slot
    assert (engine.stats().busy, free_slots(engine), bench.metric(engine, "ipaas_outcomes_pending")) == (0, 2, 1)
    assert not memory.get_execution(None, execution_id).status.terminal

    outage.end()
    healed = time.monotonic()
    execution = bench.finished(engine, execution_id, timeout=RECOVERY_BOUND)
    assert time.monotonic() - healed < RECOVERY_BOUND
    assert (execution.status, execution.attempts, execution.result["status_code"]) == (SUCCEEDED, 1, 200)
    assert len(receiver.requests("/ok")) == 1
    wait_until(lambda: bench.metric(engine, "ipaas_outcomes_pending") == 0, 1, "the gauge still counts it")
    assert bench.metric(engine, "ipaas_executions_total", {"status": "succeeded", "action_type": "http_request"}) == 1


@TAKE
def test_start_refused_for_a_while_runs_once_the_store_is_back_with_exact_accounting(memory, receiver, method,
                                                                                      operation, steps):
    outage = Outage(memory, method)
    bench = Bench(outage.store)
    engine = bench.engine(WORKERS=1, QUEUE_SIZE=2)
    workflow = bench.workflow({"url": receiver.url("/ok")}, steps=steps)
    ids = [bench.enqueue(engine, workflow) for _ in range(3)]
    wait_until(lambda: bench.metric(engine, "ipaas_store_errors_total", {"operation": operation}) >= 3, 5,
               f"the {operation} was never retried")
    stats = engine.stats()
    assert (stats.busy, stats.queue_length, free_slots(engine)) == (1, 2, 0)  # the waiting claim keeps its slot
    assert [memory.get_execution(None, i).status for i in ids] == [QUEUED] * 3 and receiver.requests() == []

    outage.end()
    healed = time.monotonic()
    assert [bench.finished(engine, i, timeout=RECOVERY_BOUND + 2).status for i in ids] == [SUCCEEDED] * 3
    assert time.monotonic() - healed < RECOVERY_BOUND + 2  # + the two queued behind it, run at the engine's pace
    assert len(receiver.requests("/ok")) == 3 * steps
    stats = engine.stats()
    assert (stats.busy, stats.queue_length, free_slots(engine)) == (0, 0, 3)
    gauges = [bench.metric(engine, name) for name in ("ipaas_workers_busy", "ipaas_queue_length")]
    assert gauges == [0, 0]


def test_shutdown_records_parked_outcomes_once_the_store_is_back_within_the_grace(memory, receiver):
    outage = Outage(memory, "finish_execution")
    bench = Bench(outage.store)
    engine = bench.engine(WORKERS=1)
    execution_id = bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")}))
    wait_until(lambda: bench.metric(engine, "ipaas_outcomes_pending") == 1, 5, "the outcome was not parked")
    threading.Timer(0.5, outage.end).start()
    engine.shutdown(grace=5)
    execution = memory.get_execution(None, execution_id)
    assert (execution.status, execution.owner) == (SUCCEEDED, engine.owner_id)
    assert len(receiver.requests("/ok")) == 1


def test_shutdown_while_the_store_still_refuses_leaves_the_execution_to_the_next_process(memory, receiver):
    outage = Outage(memory, "finish_execution", "release_executions")
    bench = Bench(outage.store)
    stopped = bench.engine(WORKERS=1)
    execution_id = bench.enqueue(stopped, bench.workflow({"url": receiver.url("/ok")}))
    wait_until(lambda: bench.metric(stopped, "ipaas_outcomes_pending") == 1, 5, "the outcome was not parked")
    started = time.monotonic()
    stopped.shutdown(grace=0.5)
    assert time.monotonic() - started < 2.0
    execution = memory.get_execution(None, execution_id)
    assert (execution.status.terminal, execution.owner) == (False, stopped.owner_id)
    assert stopped.owner_id in [worker.id for worker in memory.list_workers()]  # so that it is adopted

    outage.end()
    successor = bench.engine(WORKERS=1, WORKER_DEAD_AFTER=0.1)  # this test's pid lives on: a stale heartbeat
    assert bench.finished(successor, execution_id).status is SUCCEEDED
    assert len(receiver.requests("/ok")) == 2  # at-least-once: the stopped process took its outcome along


@TAKE
def test_shutdown_hands_back_an_execution_waiting_to_start(memory, receiver, method, operation, steps):
    bench = Bench(Outage(memory, method).store)
    engine = bench.engine(WORKERS=1)
    execution_id = bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")}, steps=steps))
    wait_until(lambda: bench.metric(engine, "ipaas_store_errors_total", {"operation": operation}) >= 1, 5,
               f"the {operation} was never tried")
    started = time.monotonic()
    engine.shutdown(grace=0)
    assert time.monotonic() - started < 2.0
    execution = memory.get_execution(None, execution_id)
    assert (execution.status, execution.owner) == (QUEUED, None)
    assert receiver.requests() == []


def test_a_process_starting_while_the_store_cannot_write_starts_and_registers_once_it_can(memory, receiver):
    """A gunicorn worker restarted mid-outage must boot (a failed boot makes the master give up entirely)."""
    outage = Outage(memory, "heartbeat", "adopt_orphans")
    bench = Bench(outage.store)
    engine = bench.engine(WORKERS=1)  # starts: no exception from the refused heartbeat
    assert engine.owner_id not in [worker.id for worker in memory.list_workers()]
    orphan = bench.record(bench.workflow({"url": receiver.url("/ok")}), None)  # handed back by a stopped process
    outage.end()
    wait_until(lambda: engine.owner_id in [worker.id for worker in memory.list_workers()], RECOVERY_BOUND,
               "the process never registered")
    assert bench.finished(engine, orphan).status is SUCCEEDED


# --- readiness -----------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self) -> None:
        self.calls, self.error = 0, None

    def __call__(self) -> None:
        self.calls += 1
        if self.error:
            raise StoreError(self.error)


def test_store_health_costs_no_write_while_real_writes_succeed():
    clock, probe, metrics = Clock(), Probe(), Metrics()
    health = StoreHealth(metrics, stale_after=10, probe_every=1, settle=1, clock=clock)
    health.written()
    for _ in range(5):
        clock.now += 2
        health.written()
        assert health.check(probe) is None
    assert probe.calls == 0
    clock.now += 10  # idle: no write proves anything any more
    assert (health.check(probe), health.check(probe), probe.calls) == (None, None, 1)


def test_store_health_probes_at_most_once_a_second_while_unhealthy_and_settles():
    clock, probe, metrics = Clock(), Probe(), Metrics()
    health = StoreHealth(metrics, stale_after=10, probe_every=1, settle=1, clock=clock)
    health.failed("outcome", StoreError("database or disk is full"))
    probe.error = "database or disk is full"
    assert health.check(probe) == "database or disk is full" and probe.calls == 0  # within settle
    clock.now += 1
    assert [health.check(probe) for _ in range(3)] == ["database or disk is full"] * 3 and probe.calls == 1
    probe.error = None
    clock.now += 0.5
    health.written()  # a write that slipped through right after a failure: not yet healthy
    assert health.check(probe) == "database or disk is full" and probe.calls == 1
    clock.now += 1
    assert (health.check(probe), probe.calls) == (None, 2)
    errors = {op: metrics.registry.get_sample_value("ipaas_store_errors_total", {"operation": op})
              for op in ("outcome", "probe")}
    assert errors == {"outcome": 1, "probe": 1}


def outage_app(store, **config):
    return create_app({"TESTING": True, "ALLOW_PRIVATE_NETWORKS": True, "LOG_LEVEL": "INFO",
                      "SECRET_KEY": TEST_SECRET_KEY, "RETRY_BASE_DELAY": 0.01, "RETRY_MAX_DELAY": 0.05,
                      "ENQUEUE_TIMEOUT": 0.5, **config}, store=store)


def test_readyz_is_503_while_the_store_cannot_write_and_recovers_by_itself(memory):
    outage = Outage(memory, "heartbeat", "probe_write", later=True)
    app = outage_app(outage.store, START_ENGINE=True, WORKERS=1, HEARTBEAT_INTERVAL=0.1)
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        outage.begin()  # reads still work: only the heartbeat's failure (then the probe's) tells
        response = wait_until(lambda: (r := client.get("/readyz")).status_code == 503 and r, 2, "readyz stayed 200")
        assert response.get_json()["checks"] == {"store": "cannot write: database is locked", "engine": "ok"}
        outage.end()
        wait_until(lambda: client.get("/readyz").status_code == 200, RECOVERY_BOUND, "readyz stayed 503")
    finally:
        shutdown_app(app, grace=0)


def test_a_webhook_refused_during_an_outage_is_one_warning_line_and_counted(memory, receiver, log_lines):
    outage = Outage(memory, "create_execution")
    app = outage_app(outage.store, START_ENGINE=True, WORKERS=1)
    try:
        client = app.test_client()
        account = make_account(memory)
        created = client.post("/api/workflows", headers=account.headers, json={
            "name": "w", "trigger_type": "webhook", "action_type": "http_request",
            "config": {"url": receiver.url("/ok")}})
        workflow_id = created.get_json()["id"]
        for n in range(3):
            response = client.post(f"/api/webhooks/{workflow_id}", json={"n": n}, headers={"X-Request-ID": f"r{n}"})
            assert response.status_code == 503 and response.headers["Retry-After"] == "5"
            assert response.get_json()["error"]["code"] == "store_unavailable"
        lines = log_lines()
        for n in range(3):
            [line] = [line for line in lines if line.get("request_id") == f"r{n}"]
            assert (line["level"], line["message"]) == ("warning", "request")
            assert line["data"]["error"] == "store unavailable: database is locked"
        assert not [line for line in lines if "exc_info" in line]
        metrics = app.extensions["ipaas"].metrics.render().decode()
        assert 'ipaas_store_errors_total{operation="request"} 3.0' in metrics
        assert receiver.requests() == []
        assert client.get("/readyz").status_code == 503  # a failed write is evidence enough
    finally:
        shutdown_app(app, grace=0)


# --- log summaries -------------------------------------------------------------------------------------
def test_repeated_store_errors_are_summarised_per_interval():
    clock, stream = Clock(), io.StringIO()
    logger = logging.getLogger("tests.outage.summaries")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logutils.Formatter())
    handler.addFilter(logutils.RepeatFilter(interval=10, clock=clock))
    handler.addFilter(logutils.ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logutils.bind(request_id="req-1"):
            for _ in range(50):
                logger.warning("store unavailable", extra=logutils.repeated("disk full", error="disk full"))
                logger.warning("store unavailable", extra=logutils.repeated("locked", error="locked"))
            logger.info("unrelated line")
            clock.now += 10
            logger.info("next line")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["message"] for line in lines] == [
            "store unavailable", "store unavailable", "unrelated line",
            "49 more like this in the last 10 s: store unavailable",
            "49 more like this in the last 10 s: store unavailable", "next line"]
        assert [line["data"] for line in lines[3:5]] == [
            {"error": "disk full", "repeated": 49, "interval_s": 10.0},
            {"error": "locked", "repeated": 49, "interval_s": 10.0}]
        assert "request_id" not in lines[3] and lines[5]["request_id"] == "req-1"
        assert all("repeat_key" not in line for line in lines)
    finally:
        logger.removeHandler(handler)


def test_a_librarys_repeated_reconnection_warnings_are_summarised_too():
    clock, stream = Clock(), io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logutils.RepeatFilter(interval=10, clock=clock, loggers=("tests.outage.pool",)))
    pool, other = logging.getLogger("tests.outage.pool.worker"), logging.getLogger("tests.outage.elsewhere")
    for logger in (pool, other):
        logger.addHandler(handler)
    try:
        for _ in range(5):
            pool.warning("error connecting in %r: %s", "pool-1", "connection refused")
            pool.info("adding new connection to the pool")
            other.warning("not summarised")
        clock.now += 10
        pool.warning("error connecting in %r: %s", "pool-1", "connection refused")
        assert stream.getvalue().splitlines() == [
            "error connecting in 'pool-1': connection refused", *["adding new connection to the pool",
                                                                   "not summarised"] * 5,
            "4 more like this in the last 10 s: error connecting in 'pool-1': connection refused",
            "error connecting in 'pool-1': connection refused"]
    finally:
        for logger in (pool, other):
            logger.removeHandler(handler)


def test_a_dashboard_page_refused_during_an_outage_is_one_warning_line(memory, log_lines):
    outage = Outage(memory, "list_workflows")
    app = outage_app(outage.store)
    try:
        client = app.test_client()
        account = make_account(memory)
        sign_in(client, account.key)
        response = client.get("/ui/workflows", headers={"X-Request-ID": "ui-1"})
        assert response.status_code == 503 and "Database unavailable" in response.get_data(as_text=True)
        [line] = [line for line in log_lines() if line.get("request_id") == "ui-1"]
        assert (line["level"], line["data"]["error"]) == ("warning", "store unavailable: database is locked")
    finally:
        shutdown_app(app, grace=0)


def test_a_distributed_worker_records_a_parked_outcome_once_the_store_is_back(memory, receiver, redis_url):
    outage = Outage(memory, "finish_execution")
    bench = Bench(outage.store)
    metrics = Metrics()
    worker = create_worker(outage.store, {"BROKER_URL": redis_url, "ALLOW_PRIVATE_NETWORKS": True,
                                          "SUPERVISOR_TICK": 0.05, "RETRY_BASE_DELAY": 0.01}, metrics, threads=1)
    queue = ExecutionQueue(redis_url)
    worker.start()
    try:
        execution_id = bench.record(bench.workflow({"url": receiver.url("/ok")}), owner=None)
        queue.send(execution_id)
        wait_until(lambda: metrics.registry.get_sample_value("ipaas_outcomes_pending") == 1, 10,
                   "the outcome was not parked")
        assert memory.get_execution(None, execution_id).status is RUNNING and worker.busy() == 0
        outage.end()
        wait_until(lambda: memory.get_execution(None, execution_id).status is SUCCEEDED, RECOVERY_BOUND,
                   "the parked outcome was not recorded")
        assert len(receiver.requests("/ok")) == 1
    finally:
        worker.shutdown(grace=0)
        queue.close()

"""The thread-pool engine end to end: real store, real HTTP receiver on 127.0.0.1, real threads."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.fernet import Fernet

from app import logutils
from app.engine import BoundedExecutor, create_engine
from app.engine.guarded import guarded_pool_manager
from app.engine.runner import RetryPolicy
from app.engine.supervisor import pid_alive
from app.errors import QueueFull, Unavailable
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, Step, User, Workflow, new_id, utcnow
from app.store import MemoryStore, Store, WorkerRecord, create_store
from tests.fakes import FailingStore
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)

QUEUED, SUCCEEDED, FAILED = ExecutionStatus.QUEUED, ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED
CANCELLED, TIMED_OUT = ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT
BASE = dict(WORKERS=2, QUEUE_SIZE=10, JOB_TIMEOUT=10.0, MAX_ATTEMPTS=3, HTTP_TIMEOUT=2.0, RETRY_BASE_DELAY=0.01,
            RETRY_MAX_DELAY=0.05, ALLOW_PRIVATE_NETWORKS=True, BREAKER_FAILURES=100, BREAKER_RESET=300.0,
            SUPERVISOR_TICK=0.05, SECRET_KEYS=[Fernet.generate_key()])
BOTH_STORES = pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)


@pytest.fixture(params=["memory"])
def store(request, tmp_path) -> Iterator[Store]:
    store = create_store(f"sqlite:///{tmp_path / 'ipaas.sqlite3'}") if request.param == "sqlite" else MemoryStore()
    store.init_schema()
    yield store
    store.close()


class Bench:
    """Builds engines (shut down at teardown), workflows and executions on one store."""

    def __init__(self, store: Store):
        self.store = store
        self.engines: list[BoundedExecutor] = []
        self._metrics: dict[str, Metrics] = {}
        now = utcnow()
        self.tenant_id = store.ensure_tenant("acme", tenant_id=new_id("tn"), now=now).id
        self.user_id = store.create_user(User(new_id("usr"), self.tenant_id, f"{new_id('u')}@acme.example", now)).id

    def engine(self, *, start: bool = True, **options: Any) -> BoundedExecutor:
        injected = {key: options.pop(key) for key in ("sleep", "manager_factory") if key in options}
        metrics = Metrics()
        engine = create_engine(self.store, {**BASE, **options}, metrics, **injected)
        self._metrics[engine.owner_id] = metrics
        self.engines.append(engine)
        if start:
            engine.start()
        return engine

    def workflow(self, config: dict[str, Any], action_type: str = "http_request", *, steps: int = 1) -> Workflow:
        """A workflow of `steps` steps, each `action_type` with `config` (several: a claim before the first)."""
        now = utcnow()
        chain = tuple(Step(f"s{number}", action_type, config) for number in range(1, steps + 1)) if steps > 1 else ()
        return self.store.create_workflow(Workflow(new_id("wf"), self.tenant_id, self.user_id, "Deploys", "webhook",
                                                   action_type, config, True, now, now, steps=chain))

    def record(self, workflow: Workflow, owner: str | None, payload: Any = None) -> str:
        now = utcnow()
        execution = Execution(new_id("ex", now), self.tenant_id, workflow.id, QUEUED, "webhook",
                              payload if payload is not None else {"user": {"name": "ada"}}, now,
                              headers={"X-Event": "push"}, owner=owner)
        return self.store.create_execution(execution)[0].id

    def enqueue(self, engine: BoundedExecutor, workflow: Workflow, payload: Any = None) -> str:
        """What the API does: take a slot, record the execution inside it, submit it."""
        with engine.slot(1.0) as slot:
            execution_id = self.record(workflow, engine.owner_id, payload)
            slot.submit(execution_id)
        return execution_id

    def metric(self, engine: BoundedExecutor, name: str, labels: dict[str, str] | None = None) -> float:
        return self._metrics[engine.owner_id].registry.get_sample_value(name, labels or {}) or 0.0

    def finished(self, engine: BoundedExecutor, execution_id: str, timeout: float = 5.0) -> Execution:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            engine.wait(execution_id, 0.05)
            execution = self.store.get_execution(None, execution_id)
            if execution.status.terminal:
                return execution
        raise AssertionError(f"execution {execution_id} did not finish within {timeout} s")


@pytest.fixture
def bench(store) -> Iterator[Bench]:
    bench = Bench(store)
    yield bench
    for engine in bench.engines:
        engine.shutdown(grace=0)


# --- outcomes ------------------------------------------------------------------------------------------
def test_success_sends_the_rendered_template(bench, receiver):
    engine = bench.engine()
    workflow = bench.workflow({"url": receiver.url("/hook"), "headers": {"X-Event": '{{ headers["x-event"] }}'},
                               "body": {"user": "{{ payload.user.name }}", "flow": "{{ workflow.name }}"}})
    execution = bench.finished(engine, bench.enqueue(engine, workflow))
    assert (execution.status, execution.attempts, execution.error) == (SUCCEEDED, 1, None)
    assert execution.result == {"attempts": 1, "status_code": 200, "body": "ok"}
    [request] = receiver.requests("/hook")
    assert request.json() == {"user": "ada", "flow": "Deploys"}
    assert request.headers["x-event"] == "push"
    assert bench.metric(engine, "ipaas_executions_total", {"status": "succeeded", "action_type": "http_request"}) == 1
    assert bench.metric(engine, "ipaas_execution_duration_seconds_count", {"action_type": "http_request"}) == 1


def test_retryable_errors_are_retried_until_success(bench, receiver):
    receiver.respond("/flaky", Reply(503), Reply(500), Reply(200))
    engine = bench.engine()
    execution = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/flaky")})))
    assert (execution.status, execution.attempts, execution.result["attempts"]) == (SUCCEEDED, 3, 3)
    assert len(receiver.requests("/flaky")) == 3
    assert bench.metric(engine, "ipaas_action_retries_total", {"action_type": "http_request"}) == 2


def test_permanent_4xx_fails_at_once(bench, receiver):
    receiver.respond("/missing", Reply(404, body="no such thing"))
    engine = bench.engine()
    execution = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/missing")})))
    assert (execution.status, execution.attempts, execution.error) == (FAILED, 1, "HTTP 404 from 127.0.0.1")
    assert execution.result == {"attempts": 1, "status_code": 404, "body": "no such thing"}
    assert len(receiver.requests()) == 1


@pytest.mark.parametrize("status, asked, job_timeout, expected, delays, error", [
    (429, ["7", "45"], 60.0, (SUCCEEDED, 3), [7.0, 45.0], None),  # 45 s: past the 30 s backoff cap, as asked
    (503, ["0", "20"], 60.0, (SUCCEEDED, 3), [0.0, 20.0], None),
    (429, ["7", "100"], 60.0, (FAILED, 2), [7.0], "HTTP 429 from 127.0.0.1: the destination asked to retry "
                                                  "after 100 s (Retry-After), past the job timeout"),
    (503, ["Wed, 21 Oct 2099 07:28:00 GMT"], 60.0, (FAILED, 1), [], "asked to retry after"),
    (429, ["61"], 60.0, (FAILED, 1), [], "asked to retry after 61 s"),
])
def test_retry_after_is_honoured_as_asked_within_the_job_timeout(bench, receiver, status, asked, job_timeout,
                                                                expected, delays, error):
    waited: list[float] = []

    def sleep(token, seconds):
        waited.append(seconds)
        token.check()

    receiver.respond("/slack", *[Reply(status, headers={"Retry-After": value}) for value in asked], Reply(200))
    engine = bench.engine(sleep=sleep, RETRY_MAX_DELAY=30.0, JOB_TIMEOUT=job_timeout)
    workflow = bench.workflow({"webhook_url": receiver.url("/slack"), "text": "hi"}, "slack_message")
    execution = bench.finished(engine, bench.enqueue(engine, workflow))
    assert (execution.status, execution.attempts) == expected
    assert waited == delays
    if error:
        assert error in execution.error and execution.result["status_code"] == status


def test_request_timeout_is_retried_then_fails(bench, receiver):
    receiver.respond("/silent", Reply(hang=True))
    engine = bench.engine()
    workflow = bench.workflow({"url": receiver.url("/silent"), "timeout": 0.2})
    execution = bench.finished(engine, bench.enqueue(engine, workflow))
    assert (execution.status, execution.attempts) == (FAILED, 3)
    assert execution.error == "no response from 127.0.0.1 within 0.2 s"
    assert len(receiver.requests("/silent")) == 3


def test_job_timeout_ends_as_timed_out(bench, receiver):
    receiver.respond("/silent", Reply(hang=True))
    engine = bench.engine(JOB_TIMEOUT=0.5)
    started = time.monotonic()
    execution = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/silent"),
                                                                             "timeout": 30})))
    assert time.monotonic() - started < 2.0
    assert (execution.status, execution.error) == (TIMED_OUT, "execution timed out after 0.5 s")


def test_supervisor_expires_the_deadline_of_a_job_blocked_in_a_read(bench, receiver):
    receiver.respond("/silent", Reply(hang=True))
    engine = bench.engine(JOB_TIMEOUT=10.0)
    hanging = bench.enqueue(engine, bench.workflow({"url": receiver.url("/silent"), "timeout": 30}))
    receiver.wait_for(1)
    [token] = engine.job_tokens()
    token.deadline = time.monotonic()  # its read timeout is still ~10 s away: only the supervisor can act
    started = time.monotonic()
    execution = bench.finished(engine, hanging, timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert execution.status is TIMED_OUT


def test_blocked_destination_fails_without_traffic(bench, receiver):
    engine = bench.engine(ALLOW_PRIVATE_NETWORKS=False)
    execution = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/x")})))
    assert (execution.status, execution.attempts) == (FAILED, 1)
    assert "127.0.0.1 is loopback" in execution.error
    assert receiver.requests() == []


def test_open_circuit_fails_fast(bench, receiver):
    receiver.respond("/down", Reply(503))
    engine = bench.engine(BREAKER_FAILURES=2)
    execution = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/down")})))
    assert (execution.status, execution.attempts) == (FAILED, 3)
    assert execution.error.startswith("circuit open for host 127.0.0.1")
    assert len(receiver.requests()) == 2


def test_template_error_fails_naming_the_field(bench, receiver):
    engine = bench.engine()
    workflow = bench.workflow({"url": receiver.url("/x"), "body": {"n": "{{ payload.user.name + 1 }}"}})
    execution = bench.finished(engine, bench.enqueue(engine, workflow))
    assert (execution.status, execution.attempts) == (FAILED, 0)
    assert execution.error.startswith("cannot render config.body.n: TypeError")
    assert receiver.requests() == []


def test_worker_boundary_records_a_crash_and_survives(bench, receiver, caplog):
    engine = bench.engine(WORKERS=1)
    broken = bench.workflow({"url": receiver.url("/x"), "headers": {"X-Count": 5}})  # bypassed validation
    execution = bench.finished(engine, bench.enqueue(engine, broken))
    assert (execution.status, execution.error) == (FAILED, "internal error: TypeError")
    assert "execution crashed" in caplog.messages
    assert bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")}))).status \
        is SUCCEEDED


# How a worker takes an execution its process recorded: a one-step one is read (run without a claim),
# one of several steps is claimed (engine/runner.py). (store method, its operation label, steps)
TAKE = pytest.mark.parametrize(("method", "operation", "steps"), [
    ("get_execution", "execution read", 1), ("claim_execution", "claim", 2)], ids=["read", "claim"])


@pytest.mark.parametrize(("method", "steps"), [("get_execution", 1), ("claim_execution", 2),
                                               ("finish_execution", 1), ("finish_execution", 2)])
def test_start_and_outcome_are_recorded_once_the_store_answers_again(store, receiver, method, steps):
    flaky = FailingStore(store, method)
    bench = Bench(flaky)
    engine = bench.engine(WORKERS=1)
    try:
        workflow = bench.workflow({"url": receiver.url("/ok")}, steps=steps)
        execution = bench.finished(engine, bench.enqueue(engine, workflow))
        assert execution.status is SUCCEEDED and flaky.failures == 0 and len(receiver.requests("/ok")) == steps
    finally:
        engine.shutdown(grace=0)


# --- cancellation --------------------------------------------------------------------------------------
@BOTH_STORES
def test_cancel_of_a_hanging_action_takes_effect_within_2s_and_frees_the_worker(bench, receiver):
    receiver.respond("/hang", Reply(hang=True))
    engine = bench.engine(WORKERS=1)
    ok = bench.workflow({"url": receiver.url("/ok")})
    # The hanging request then reuses this one's pooled keep-alive connection, which must be cancellable too.
    assert bench.finished(engine, bench.enqueue(engine, ok)).status is SUCCEEDED
    hanging = bench.enqueue(engine, bench.workflow({"url": receiver.url("/hang"), "timeout": 30}))
    receiver.wait_for(1, path="/hang")
    assert (engine.stats().busy, bench.metric(engine, "ipaas_workers_busy")) == (1, 1)
    started = time.monotonic()
    assert engine.cancel(hanging, "api:usr_1")
    assert engine.wait(hanging, 2.0)
    assert time.monotonic() - started < 2.0
    execution = bench.store.get_execution(None, hanging)
    assert (execution.status, execution.cancelled_by, execution.attempts) == (CANCELLED, "api:usr_1", 1)
    assert bench.finished(engine, bench.enqueue(engine, ok)).status is SUCCEEDED
    gauges = [bench.metric(engine, name) for name in ("ipaas_workers_busy", "ipaas_queue_length")]
    assert (engine.stats().busy, *gauges) == (0, 0, 0)


@BOTH_STORES
def test_cancel_through_the_store_alone_reaches_the_job(bench, receiver):
    receiver.respond("/hang", Reply(hang=True))
    engine = bench.engine(WORKERS=1, SUPERVISOR_TICK=0.25)
    hanging = bench.enqueue(engine, bench.workflow({"url": receiver.url("/hang"), "timeout": 30}))
    receiver.wait_for(1, path="/hang")
    started = time.monotonic()
    # As another gunicorn process would: only the store hears of it, never this engine.
    bench.store.request_cancel(bench.tenant_id, hanging, by="api:usr_2", now=utcnow())
    assert engine.wait(hanging, 2.0)
    assert time.monotonic() - started < 2.0
    execution = bench.store.get_execution(None, hanging)
    assert (execution.status, execution.cancelled_by) == (CANCELLED, "api:usr_2")


def test_deleting_the_workflow_cancels_its_running_execution(bench, receiver):
    receiver.respond("/hang", Reply(hang=True))
    engine = bench.engine()
    workflow = bench.workflow({"url": receiver.url("/hang"), "timeout": 30})
    hanging = bench.enqueue(engine, workflow)
    receiver.wait_for(1)
    bench.store.delete_workflow(bench.tenant_id, workflow.id, now=utcnow())
    execution = bench.finished(engine, hanging, timeout=2.0)
    assert (execution.status, execution.cancelled_by) == (CANCELLED, "workflow deleted")


def test_a_cancel_landing_as_the_action_returns_is_not_recorded_as_success(bench, receiver):
    engines: list[BoundedExecutor] = []

    def late_cancelling_manager(maxsize):
        manager = guarded_pool_manager(maxsize)
        send = manager.urlopen

        def urlopen(*args, **kwargs):
            response = send(*args, **kwargs)
            for token in engines[0].job_tokens():
                token.cancel("api:usr_late")
            return response

        manager.urlopen = urlopen
        return manager

    engines.append(bench.engine(manager_factory=late_cancelling_manager))
    execution = bench.finished(engines[0], bench.enqueue(engines[0], bench.workflow({"url": receiver.url("/ok")})))
    assert (execution.status, execution.cancelled_by) == (CANCELLED, "api:usr_late")
    assert len(receiver.requests()) == 1


# --- admission -----------------------------------------------------------------------------------------
def test_unsubmitted_slots_are_given_back(bench):
    engine = bench.engine(WORKERS=1, QUEUE_SIZE=1)
    for _ in range(5):
        with engine.slot(0.0):
            pass
    with engine.slot(0.0), engine.slot(0.0):
        with pytest.raises(QueueFull) as caught:
            with engine.slot(0.0):
                pass
    assert caught.value.retry_after >= 1
    assert (engine.stats().dropped, bench.metric(engine, "ipaas_jobs_dropped_total")) == (1, 1)
    with engine.slot(0.0):
        pass


@pytest.mark.slow
@BOTH_STORES
def test_storm_admits_what_fits_and_refuses_the_rest(bench, receiver):
    receiver.respond("/storm", Reply(delay=0.002))
    engine = bench.engine(WORKERS=2, QUEUE_SIZE=5)
    workflow = bench.workflow({"url": receiver.url("/storm"), "body": {"n": "{{ payload.n }}"}})
    lock = threading.Lock()
    admitted: dict[str, int] = {}
    refused: list[int] = []
    peak = 0

    def attempt(n: int) -> None:
        nonlocal peak
        try:
            with engine.slot(0.01) as slot:  # a short wait, so freed slots get reused mid-storm
                execution_id = bench.record(workflow, engine.owner_id, {"n": n})
                slot.submit(execution_id)
        except QueueFull:
            with lock:
                refused.append(n)
            return
        stats = engine.stats()
        with lock:
            admitted[execution_id] = n
            peak = max(peak, stats.busy + stats.queue_length)

    with ThreadPoolExecutor(max_workers=16) as senders:
        list(senders.map(attempt, range(300)))
    for execution_id in admitted:
        assert bench.finished(engine, execution_id, timeout=30).status is SUCCEEDED
    assert len(admitted) + len(refused) == 300
    assert refused and len(admitted) >= 7
    assert peak <= 7
    assert sorted(int(r.json()["n"]) for r in receiver.requests("/storm")) == sorted(admitted.values())
    dropped = bench.metric(engine, "ipaas_jobs_dropped_total")
    assert (engine.stats().dropped, dropped) == (len(refused), len(refused))


# --- shutdown and recovery -----------------------------------------------------------------------------
def test_shutdown_hands_back_queued_and_running_executions(bench, receiver):
    receiver.respond("/slow", Reply(hang=True))
    engine = bench.engine(WORKERS=1, QUEUE_SIZE=5)
    workflow = bench.workflow({"url": receiver.url("/slow"), "timeout": 30})
    ids = [bench.enqueue(engine, workflow) for _ in range(3)]
    receiver.wait_for(1)
    started = time.monotonic()
    engine.shutdown(grace=0.1)
    assert time.monotonic() - started < 2.0
    for execution_id in ids:
        execution = bench.store.get_execution(None, execution_id)
        assert (execution.status, execution.owner, execution.started_at) == (QUEUED, None, None)
    assert len(receiver.requests()) == 1
    assert engine.owner_id not in [worker.id for worker in bench.store.list_workers()]
    with pytest.raises(Unavailable):
        with engine.slot(0.1):
            pass

    receiver.respond("/slow", Reply(200))
    receiver.release()
    successor = bench.engine(WORKERS=1, QUEUE_SIZE=5)
    assert [bench.finished(successor, execution_id).status for execution_id in ids] == [SUCCEEDED] * 3


def test_shutdown_lets_running_work_finish_within_grace(bench, receiver):
    receiver.respond("/slowish", Reply(delay=0.2))
    engine = bench.engine(WORKERS=1)
    running = bench.enqueue(engine, bench.workflow({"url": receiver.url("/slowish")}))
    receiver.wait_for(1)
    engine.shutdown(grace=5)
    assert bench.store.get_execution(None, running).status is SUCCEEDED


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_zombie_process_is_not_alive():
    """A worker killed along with its master stays a zombie until PID 1 reaps it: its executions must
    not wait for that."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    try:
        assert not pid_alive(child.pid)
        assert pid_alive(os.getpid())
    finally:
        child.wait()
    assert not pid_alive(child.pid)  # reaped: gone


@pytest.mark.parametrize("host, pid, age", [("elsewhere", 1, 60), (socket.gethostname(), None, 0)],
                         ids=["stale-heartbeat", "dead-pid-on-this-host"])
def test_recovery_adopts_orphans_of_a_dead_owner(bench, receiver, host, pid, age):
    workflow = bench.workflow({"url": receiver.url("/ok")})
    bench.store.heartbeat(WorkerRecord("wrk_dead", host, pid or _dead_pid(), utcnow() - timedelta(seconds=age)))
    queued = bench.record(workflow, "wrk_dead")
    running = bench.record(workflow, "wrk_dead")
    assert bench.store.claim_execution(running, owner="wrk_dead", now=utcnow())
    engine = bench.engine()
    assert [bench.finished(engine, i).status for i in (queued, running)] == [SUCCEEDED, SUCCEEDED]
    assert len(receiver.requests("/ok")) == 2
    assert "wrk_dead" not in [worker.id for worker in bench.store.list_workers()]


def test_recovery_keeps_adopting_unowned_executions_after_start(bench, receiver):
    engine = bench.engine()
    handed_back = bench.record(bench.workflow({"url": receiver.url("/ok")}), owner=None)
    assert bench.finished(engine, handed_back, timeout=3.0).status is SUCCEEDED


def test_recovery_drains_a_backlog_larger_than_the_queue_at_the_engines_pace(bench, receiver):
    """A round that fills every free slot is followed by another at the next tick, not recover_every later."""
    workflow = bench.workflow({"url": receiver.url("/ok")})
    handed_back = [bench.record(workflow, owner=None) for _ in range(8)]
    engine = bench.engine(WORKERS=1, QUEUE_SIZE=1, RECOVER_INTERVAL=3600)  # start() adopts the first 2
    assert [bench.finished(engine, i).status for i in handed_back] == [SUCCEEDED] * 8
    assert len(receiver.requests("/ok")) == 8


def test_recovery_leaves_a_live_owner_alone(bench, receiver):
    workflow = bench.workflow({"url": receiver.url("/ok")})
    bench.store.heartbeat(WorkerRecord("wrk_alive", socket.gethostname(), os.getpid(), utcnow()))
    theirs = bench.record(workflow, "wrk_alive")
    bench.engine()  # start() runs recovery before it returns
    execution = bench.store.get_execution(None, theirs)
    assert (execution.status, execution.owner) == (QUEUED, "wrk_alive")
    assert receiver.requests() == []


# --- logs and secrets ----------------------------------------------------------------------------------
@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logutils.json_handler(stream)
    logger = logging.getLogger("app.engine")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_logs_are_structured_with_ids_and_never_show_the_webhook_token(bench, receiver, json_logs):
    receiver.respond("/services/T1/B1/sekrit", Reply(503), Reply(404, body="no_service"))
    engine = bench.engine()
    workflow = bench.workflow({"webhook_url": receiver.url("/services/T1/B1/sekrit"), "text": "hi"}, "slack_message")
    execution = bench.finished(engine, bench.enqueue(engine, workflow))
    assert (execution.status, execution.attempts) == (FAILED, 2)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    mine = [line for line in lines if line.get("execution_id") == execution.id]
    assert [line["message"] for line in mine] == ["execution started", "execution retried", "execution failed"]
    for line in mine:
        assert (line["tenant_id"], line["workflow_id"]) == (bench.tenant_id, workflow.id)
        assert {"duration_ms", "status", "action_type", "attempts"} <= set(line["data"])
    assert mine[-1]["data"]["error"] == "HTTP 404 from 127.0.0.1"
    assert "sekrit" not in json_logs.getvalue() + json.dumps(execution.result) + execution.error


def test_retry_policy_backs_off_exponentially_with_full_jitter():
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=4.0)
    assert [policy.delay(n, None, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(3, None, rand=lambda: 0.25) == 0.5
    assert (policy.delay(1, 3.0), policy.delay(1, 60.0)) == (3.0, 60.0)  # Retry-After as asked, past max_delay

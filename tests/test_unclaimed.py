"""One-step executions a process recorded run without a claim (engine/runner.py, issue 14): what keeps cancel,
`running` and recovery exact without that write. On a real SQLite file (and the memory store), real threads,
a real receiver on 127.0.0.1; kill -9 of the real service is in test_lifecycle.py."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from app import shutdown_app
from app.models import ExecutionStatus, utcnow
from app.store import WorkerRecord, create_store
from tests.conftest import build_app, make_account
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)
from tests.serverproc import delivery_counts, wait_until
from tests.test_engine import BOTH_STORES, Bench, bench, store  # noqa: F401 (fixtures)

QUEUED, RUNNING, SUCCEEDED = ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED
CANCELLED = ExecutionStatus.CANCELLED


@BOTH_STORES
def test_a_long_action_is_recorded_running_within_a_tick_and_a_short_one_ends_with_its_start(bench, receiver):
    receiver.respond("/hang", Reply(hang=True))
    engine = bench.engine(WORKERS=1, SUPERVISOR_TICK=0.05)
    short = bench.finished(engine, bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")})))
    assert short.status is SUCCEEDED and short.created_at <= short.started_at <= short.finished_at

    hanging = bench.enqueue(engine, bench.workflow({"url": receiver.url("/hang"), "timeout": 30}))
    receiver.wait_for(1, path="/hang")
    running = wait_until(lambda: (e := bench.store.get_execution(None, hanging)).status is RUNNING and e, 2.0,
                         "the long action was never recorded running")
    assert (running.owner, running.started_at is not None) == (engine.owner_id, True)
    receiver.release()
    done = bench.finished(engine, hanging)
    assert (done.status, done.started_at) == (SUCCEEDED, running.started_at)


@BOTH_STORES
def test_a_cancel_recorded_by_another_process_ends_a_waiting_execution_unsent(bench, receiver):
    receiver.respond("/hang", Reply(hang=True))
    engine = bench.engine(WORKERS=1, SUPERVISOR_TICK=0.05)
    bench.enqueue(engine, bench.workflow({"url": receiver.url("/hang"), "timeout": 30}))
    receiver.wait_for(1, path="/hang")
    waiting = bench.enqueue(engine, bench.workflow({"url": receiver.url("/ok")}))
    # As another gunicorn process would: only the store hears of it. The row is queued under this engine,
    # so the store flags it and this engine ends it, without waiting for the busy worker.
    flagged = bench.store.request_cancel(bench.tenant_id, waiting, by="api:usr_2", now=utcnow())
    assert (flagged.status, flagged.cancelled_by) == (QUEUED, "api:usr_2")
    ended = wait_until(lambda: (e := bench.store.get_execution(None, waiting)).status.terminal and e, 2.0,
                       "the waiting execution was not cancelled")
    assert (ended.status, ended.cancelled_by, ended.attempts, ended.started_at) == (CANCELLED, "api:usr_2", 0, None)
    assert bench.metric(engine, "ipaas_executions_total", {"status": "cancelled", "action_type": "http_request"}) == 1
    assert engine.stats().busy == 1  # the hanging one still runs
    receiver.release()
    assert engine.wait(waiting, 2.0)
    assert receiver.requests("/ok") == []


@BOTH_STORES
def test_an_adopter_ends_a_flagged_execution_of_a_dead_owner_unsent(bench, receiver):
    workflow = bench.workflow({"url": receiver.url("/ok"), "body": {"execution": "{{ execution.id }}"}})
    dead = "wrk_dead"
    bench.store.heartbeat(WorkerRecord(dead, "another-host", 4242, utcnow() - timedelta(minutes=5)))
    flagged_id = bench.record(workflow, dead)
    plain_id = bench.record(workflow, dead)
    assert bench.store.request_cancel(bench.tenant_id, flagged_id, by="api:usr_3", now=utcnow()).status is QUEUED
    engine = bench.engine(WORKERS=1)
    flagged, plain = bench.finished(engine, flagged_id), bench.finished(engine, plain_id)
    assert (flagged.status, flagged.cancelled_by, flagged.owner) == (CANCELLED, "api:usr_3", engine.owner_id)
    assert plain.status is SUCCEEDED
    assert bench.metric(engine, "ipaas_executions_total", {"status": "cancelled", "action_type": "http_request"}) == 1
    assert delivery_counts(receiver, "/ok") == {plain_id: 1}


@pytest.fixture
def sqlite_app(tmp_path):
    app = build_app(create_store(f"sqlite:///{tmp_path / 'ipaas.sqlite3'}"), START_ENGINE=True, WORKERS=2,
                    QUEUE_SIZE=100, ENQUEUE_TIMEOUT=2.0, SUPERVISOR_TICK=0.05)
    yield app
    shutdown_app(app, grace=5)


def test_cancels_racing_the_start_never_answer_cancelled_for_an_execution_that_is_sent(sqlite_app, receiver):
    """A cancel answered `cancelled` (through the API) means nothing was or will be sent; a cancel that lands
    on a started action flags it (as for any running execution): it ends cancelled or, if the action had
    returned, succeeded. Every execution is sent at most once and ends."""
    receiver.respond("/slow", Reply(delay=0.02))
    client, account = sqlite_app.test_client(), make_account(sqlite_app.extensions["ipaas"].store)
    response = client.post("/api/workflows", headers=account.headers, json={
        "name": "race", "trigger_type": "manual", "action_type": "http_request",
        "config": {"url": receiver.url("/slow"), "body": {"execution": "{{ execution.id }}"}}})
    assert response.status_code == 201, response.get_json()
    run_url = f"/api/workflows/{response.get_json()['id']}/run"
    rand = random.Random(14)
    answers: dict[str, str] = {}
    cancellers = []

    def cancel(execution_id: str, delay: float) -> None:
        time.sleep(delay)  # the race itself: a cancel at some point of the execution's start
        answer = sqlite_app.test_client().post(f"/api/executions/{execution_id}/cancel", headers=account.headers)
        answers[execution_id] = answer.get_json()["status"] if answer.status_code == 202 else str(answer.status_code)

    ids = []
    for number in range(60):
        reply = client.post(run_url, headers=account.headers, json={})
        assert reply.status_code == 202, reply.get_json()
        ids.append(reply.get_json()["execution_id"])
        if number % 3:  # two in three are cancelled, at once or up to 30 ms later
            canceller = threading.Thread(target=cancel, args=(ids[-1], rand.choice([0, 0.005, 0.01, 0.03])))
            canceller.start()
            cancellers.append(canceller)
    for canceller in cancellers:
        canceller.join(10)
    store = sqlite_app.extensions["ipaas"].store
    final = wait_until(lambda: (found := {i: store.get_execution(None, i) for i in ids}) and all(
        e.status.terminal for e in found.values()) and found, 20, "not every execution ended")
    sent = delivery_counts(receiver, "/slow")

    assert max(sent.values()) == 1
    for execution_id, execution in final.items():
        answer = answers.get(execution_id)
        if answer == "cancelled":
            assert execution_id not in sent and execution.status is CANCELLED, (execution_id, execution)
        elif answer is None:
            assert (execution.status, sent[execution_id]) == (SUCCEEDED, 1)
        else:  # flagged while running ("running"/"queued"), or 409: it had ended
            assert execution.status in (CANCELLED, SUCCEEDED) and (execution.status is CANCELLED or sent[execution_id])
    outcomes = Counter((answers.get(i) == "cancelled", i in sent) for i in ids)
    assert outcomes[(True, False)] >= 5, outcomes  # cancels that ended waiting executions unsent: the race ran
    assert outcomes[(False, True)] >= 20, outcomes

"""Workflows of several steps, run by the engine on a real SQLite file and driven through the HTTP API, each step
sending to a real receiver on 127.0.0.1: data between steps, retries that never repeat a step that succeeded,
conditions, failures, cancels, job timeouts, resume after a hand-back, and replay."""
from __future__ import annotations

import json
import time

import pytest

from app import shutdown_app
from app.store import create_store
from tests.conftest import build_app, make_account
from tests.fakes import FailingStore
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)
from tests.serverproc import wait_until
from tests.test_webhooks_api import app, wait_status  # noqa: F401 (the engine app fixture too)

ENGINE = dict(START_ENGINE=True, WORKERS=2, QUEUE_SIZE=10, RETRY_BASE_DELAY=0.01, RETRY_MAX_DELAY=0.05,
              ENQUEUE_TIMEOUT=0.5, SUPERVISOR_TICK=0.05, RECOVER_INTERVAL=0.1)
SLACK_URL = "https://hooks.slack.com/services/T000/B000/s3cretTokenPart"


@pytest.fixture
def database(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ipaas.sqlite3'}"


@pytest.fixture
def store(database):
    """conftest's engine_app on a real SQLite file instead of the memory store."""
    return create_store(database)


def step(name, url, **extra):
    config = {"url": url, **extra.pop("config", {})}
    return {"name": name, "action_type": "http_request", "config": config, **extra}


def create(client, account, steps):
    response = client.post("/api/workflows", headers=account.headers,
                           json={"name": "chain", "trigger_type": "manual", "steps": steps})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def run(client, account, workflow_id, payload=None):
    response = client.post(f"/api/workflows/{workflow_id}/run", json=payload or {}, headers=account.headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["execution_id"]


def statuses(execution):
    return [(s["name"], s["status"]) for s in execution["steps"]]


def test_later_steps_see_earlier_results_and_every_request_carries_its_idempotency_key(client, account, receiver):
    receiver.respond("/lookup", Reply(200, body=json.dumps({"user": {"email": "ada@example.com", "url": SLACK_URL}}),
                                      headers={"Content-Type": "application/json", "X-Request-Id": "rq-7"}))
    workflow = create(client, account, [
        step("lookup", receiver.url("/lookup"), config={"method": "GET"}),
        step("notify", receiver.url("/notify"), config={"body": {
            "email": "{{ steps.lookup.body.user.email }}", "hook": "{{ steps.lookup.body.user.url }}",
            "request": "{{ steps.lookup.headers['x-request-id'] }}", "code": "{{ steps.lookup.status_code }}",
            "status": "{{ steps.lookup.status }}"}}),
    ])
    execution_id = run(client, account, workflow)
    done = wait_status(client, account, execution_id)

    assert done["status"] == "succeeded", done
    assert statuses(done) == [("lookup", "succeeded"), ("notify", "succeeded")]
    [notified] = receiver.requests("/notify")
    # Later steps get the response as it was; only what is shown is redacted.
    assert notified.json() == {"email": "ada@example.com", "hook": SLACK_URL, "request": "rq-7", "code": "200",
                               "status": "succeeded"}
    assert "s3cretTokenPart" not in json.dumps(done) and "[REDACTED]" in done["steps"][0]["result"]["body"]
    assert [r.headers["idempotency-key"] for r in receiver.requests()] == [f"{execution_id}:lookup",
                                                                          f"{execution_id}:notify"]
    assert done["result"] == done["steps"][1]["result"] == {"attempts": 1, "status_code": 200, "body": "ok"}
    for shown in done["steps"]:
        assert shown["started_at"] <= shown["finished_at"] and shown["duration_ms"] >= 0 and shown["error"] is None


def test_a_retried_step_never_repeats_the_step_before_it(client, account, receiver):
    receiver.respond("/two", Reply(503), Reply(503), Reply(200, body="done"))
    workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two"))])
    done = wait_status(client, account, run(client, account, workflow))

    assert done["status"] == "succeeded", done
    assert len(receiver.requests("/one")) == 1 and len(receiver.requests("/two")) == 3
    assert [s["attempts"] for s in done["steps"]] == [1, 3]
    assert done["attempts"] == 3 and done["result"]["body"] == "done"
    keys = {r.headers["idempotency-key"] for r in receiver.requests("/two")}
    assert keys == {f"{done['id']}:two"}  # the same key on every attempt


def test_conditions_skip_steps_and_later_steps_see_the_skip(client, account, receiver):
    workflow = create(client, account, [
        step("big", receiver.url("/big"), condition="payload.amount > 100"),
        step("missing", receiver.url("/missing"), condition="payload.nothing.here"),
        step("compare_undefined", receiver.url("/cmp"), condition="payload.nothing > 1"),
        step("small", receiver.url("/small"), condition="steps.big.status == 'skipped'",
             config={"body": {"big": "{{ steps.big.status }}", "code": "{{ steps.big.status_code }}"}}),
    ])
    done = wait_status(client, account, run(client, account, workflow, {"amount": 50}))

    assert done["status"] == "succeeded", done
    assert statuses(done) == [("big", "skipped"), ("missing", "skipped"), ("compare_undefined", "skipped"),
                              ("small", "succeeded")]
    assert [r.path for r in receiver.requests()] == ["/small"]
    assert receiver.requests("/small")[0].json() == {"big": "skipped", "code": "null"}
    assert done["steps"][0]["attempts"] == 0 and done["steps"][0]["result"] is None


def test_a_failed_step_fails_the_execution_naming_it_and_later_steps_stay_pending(client, account, receiver):
    receiver.respond("/two", Reply(404, body="no such user"))
    workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two")),
                                        step("three", receiver.url("/three"))])
    done = wait_status(client, account, run(client, account, workflow))

    assert done["status"] == "failed"
    assert done["error"].startswith("step two: HTTP 404") and done["steps"][1]["error"].startswith("HTTP 404")
    assert statuses(done) == [("one", "succeeded"), ("two", "failed"), ("three", "pending")]
    assert done["result"] == {"attempts": 1, "status_code": 404, "body": "no such user"}
    assert receiver.requests("/three") == []


def test_a_condition_that_cannot_be_evaluated_fails_its_step(client, account, receiver):
    workflow = create(client, account, [step("one", receiver.url("/one")),
                                        step("two", receiver.url("/two"), condition="payload.name > 3")])
    done = wait_status(client, account, run(client, account, workflow, {"name": "ada"}))
    assert done["status"] == "failed" and "steps[1].condition" in done["error"], done
    assert statuses(done) == [("one", "succeeded"), ("two", "failed")]


def test_a_large_body_is_cut_for_later_steps_and_says_so(client, account, receiver):
    big = json.dumps({"items": ["x" * 100] * 1000})  # about 100 KB: more than the 64 KiB kept
    receiver.respond("/big", Reply(200, body=big, headers={"Content-Type": "application/json"}))
    workflow = create(client, account, [step("big", receiver.url("/big")), step("next", receiver.url("/next"), config={
        "body": {"cut": "{{ steps.big.truncated }}", "length": "{{ steps.big.body | length }}"}})])
    done = wait_status(client, account, run(client, account, workflow))

    assert done["status"] == "succeeded", done
    assert receiver.requests("/next")[0].json() == {"cut": "true", "length": str(64 * 1024)}
    shown = done["steps"][0]["result"]
    assert shown["body_truncated"] is True and len(shown["body"]) == 2048


def test_cancel_during_a_step_stops_it_within_2s_and_cancels_the_rest(client, account, receiver):
    receiver.respond("/two", Reply(hang=True))
    workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two")),
                                        step("three", receiver.url("/three"))])
    execution_id = run(client, account, workflow)
    receiver.wait_for(1, path="/two")
    shown = client.get(f"/api/executions/{execution_id}", headers=account.headers).get_json()
    assert statuses(shown) == [("one", "succeeded"), ("two", "running"), ("three", "pending")]

    started = time.monotonic()
    assert client.post(f"/api/executions/{execution_id}/cancel", headers=account.headers).status_code == 202
    done = wait_status(client, account, execution_id, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert done["status"] == "cancelled"
    assert statuses(done) == [("one", "succeeded"), ("two", "cancelled"), ("three", "cancelled")]
    assert receiver.requests("/three") == []


def test_the_job_timeout_covers_the_whole_execution(database, receiver):
    app = build_app(create_store(database), **{**ENGINE, "JOB_TIMEOUT": 1.5})
    try:
        client, account = app.test_client(), make_account(app.extensions["ipaas"].store)
        receiver.respond("/slow", Reply(delay=1.0))  # each step alone fits in the timeout, both do not
        workflow = create(client, account, [step("one", receiver.url("/slow")),
                                            step("two", receiver.url("/slow"), config={"timeout": 5})])
        done = wait_status(client, account, run(client, account, workflow), timeout=5)
        assert done["status"] == "timed_out", done
        assert statuses(done) == [("one", "succeeded"), ("two", "cancelled")]
        assert 1500 <= done["duration_ms"] < 3000
    finally:
        receiver.release()
        shutdown_app(app, grace=5)


def test_a_handed_back_execution_resumes_at_the_step_that_had_not_succeeded(database, receiver):
    receiver.respond("/two", Reply(hang=True))
    first = build_app(create_store(database), **ENGINE)
    client, account = first.test_client(), make_account(first.extensions["ipaas"].store)
    workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two"))])
    execution_id = run(client, account, workflow)
    receiver.wait_for(1, path="/two")
    shutdown_app(first, grace=0)  # SIGTERM's path: the running step is cut off, the execution handed back
    receiver.respond("/two", Reply(200))

    second = build_app(create_store(database), **ENGINE)
    try:
        done = wait_status(second.test_client(), account, execution_id, timeout=10)
        assert done["status"] == "succeeded", done
        assert len(receiver.requests("/one")) == 1 and len(receiver.requests("/two")) == 2
        assert {r.headers["idempotency-key"] for r in receiver.requests("/two")} == {f"{execution_id}:two"}
    finally:
        shutdown_app(second, grace=5)


def test_replay_from_failed_keeps_the_steps_that_succeeded(client, account, receiver):
    receiver.respond("/two", Reply(400, body="bad"), Reply(200, body="fixed"))
    workflow = create(client, account, [
        step("one", receiver.url("/one"), config={"method": "GET"}),
        step("two", receiver.url("/two"), config={"body": {"from_one": "{{ steps.one.body }}"}}),
    ])
    failed = wait_status(client, account, run(client, account, workflow))
    assert failed["status"] == "failed"

    response = client.post(f"/api/executions/{failed['id']}/replay?from=failed", headers=account.headers)
    assert response.status_code == 202, response.get_json()
    resumed = wait_status(client, account, response.get_json()["execution_id"])
    assert resumed["status"] == "succeeded" and resumed["replay_of"] == failed["id"]
    assert len(receiver.requests("/one")) == 1  # copied, not sent again
    assert resumed["steps"][0] == failed["steps"][0]
    assert receiver.requests("/two")[-1].json() == {"from_one": "ok"}  # the copied result feeds the next step
    assert resumed["result"]["body"] == "fixed"

    again = client.post(f"/api/executions/{failed['id']}/replay", headers=account.headers).get_json()
    assert wait_status(client, account, again["execution_id"])["status"] == "succeeded"
    assert len(receiver.requests("/one")) == 2  # a plain replay runs every step again


@pytest.mark.parametrize("query, status", [("?from=failed", 409), ("?from=start", 422), ("?from=", 422)])
def test_replay_from_failed_of_an_execution_without_a_failed_step_is_refused(client, account, receiver, query,
                                                                             status):
    workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two"))])
    done = wait_status(client, account, run(client, account, workflow))
    response = client.post(f"/api/executions/{done['id']}/replay{query}", headers=account.headers)
    assert response.status_code == status, response.get_json()
    assert "from" in response.get_json()["error"]["message"]
    assert len(client.get("/api/executions", headers=account.headers).get_json()["items"]) == 1


def test_a_one_step_workflow_shows_its_step_main(client, account, receiver):
    response = client.post("/api/workflows", headers=account.headers, json={
        "name": "one", "trigger_type": "manual", "action_type": "http_request",
        "config": {"url": receiver.url("/hook")}})
    done = wait_status(client, account, run(client, account, response.get_json()["id"]))
    [main] = done["steps"]
    assert (main["name"], main["status"], main["attempts"], main["result"]) == ("main", "succeeded", 1, done["result"])
    assert receiver.requests("/hook")[0].headers["idempotency-key"] == f"{done['id']}:main"
    listed = client.get("/api/executions", headers=account.headers).get_json()["items"]
    assert listed[0]["steps"] == done["steps"]


@pytest.mark.parametrize("failures", [1, None])
def test_a_step_whose_checkpoint_is_not_recorded_does_not_let_the_next_start(database, receiver, failures):
    """The store refuses the checkpoint once, or for a while (README "Store outages"): the worker retries it
    and the next step starts only once it is recorded; no step is sent twice."""
    store = FailingStore(create_store(database), "record_step", failures=failures)
    app = build_app(store, **ENGINE)
    try:
        client, account = app.test_client(), make_account(store)
        workflow = create(client, account, [step("one", receiver.url("/one")), step("two", receiver.url("/two"))])
        execution_id = run(client, account, workflow)
        if failures is None:
            metrics = app.extensions["ipaas"].metrics.registry
            wait_until(lambda: (metrics.get_sample_value("ipaas_store_errors_total",
                                                         {"operation": "step checkpoint"}) or 0) >= 3, 5,
                       "the checkpoint was not retried")
            shown = client.get(f"/api/executions/{execution_id}", headers=account.headers).get_json()
            assert shown["status"] == "running" and receiver.requests("/two") == []
            store.failures = 0  # the store is back
        assert wait_status(client, account, execution_id)["status"] == "succeeded"
        assert len(receiver.requests("/one")) == 1 and len(receiver.requests("/two")) == 1
    finally:
        shutdown_app(app, grace=5)

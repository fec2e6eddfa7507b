"""Webhook ingestion through the app with a running engine and a real receiver on 127.0.0.1."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.security.signatures import sign_github, sign_standard
from tests.conftest import make_account
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)


@pytest.fixture
def app(engine_app):
    """Every test here runs executions: conftest's client and account then use the engine's app."""
    return engine_app


def make_workflow(client, account, url, **extra):
    body = {"name": "hook", "trigger_type": "webhook", "action_type": "http_request",
            "config": {"url": url, "body": {"who": "{{ payload.user.name }}", "event": "{{ headers['x-event'] }}",
                                            "q": "{{ query.tag }}", "execution": "{{ execution.id }}"}}, **extra}
    response = client.post("/api/workflows", json=body, headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def wait_status(client, account, execution_id, statuses=("succeeded", "failed", "cancelled", "timed_out"), timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/executions/{execution_id}", headers=account.headers).get_json()
        if body["status"] in statuses:
            return body
        time.sleep(0.02)  # a poll with a deadline: the engine runs in other threads
    raise AssertionError(f"execution {execution_id} still {body['status']} after {timeout}s")


def test_json_webhook_is_accepted_and_delivered_with_rendered_template(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}?tag=blue", json={"user": {"name": "Ada"}},
                           headers={"X-Event": "push"})
    assert response.status_code == 202
    execution_id = response.get_json()["execution_id"]
    done = wait_status(client, account, execution_id)
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["trigger"] == "webhook"
    assert done["result"]["status_code"] == 200 and done["payload"] == {"user": {"name": "Ada"}}
    assert receiver.requests("/hook")[0].json() == {"who": "Ada", "event": "push", "q": "blue",
                                                    "execution": execution_id}


@pytest.mark.parametrize("data, content_type, payload", [
    ("user=Ada&n=1", "application/x-www-form-urlencoded", {"user": "Ada", "n": "1"}),
    ("plain words", "text/plain", "plain words"),
    ("", "application/json", None),
])
def test_form_and_text_bodies_are_accepted(client, account, receiver, data, content_type, payload):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}", data=data, content_type=content_type)
    assert response.status_code == 202
    assert wait_status(client, account, response.get_json()["execution_id"])["payload"] == payload


@pytest.mark.parametrize("raw", [b"{", b"[1,", b"nope", b"\xff"])
def test_malformed_json_is_400_and_records_nothing(client, account, receiver, raw):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}", data=raw, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"
    assert client.get("/api/executions", headers=account.headers).get_json()["items"] == []


def test_oversize_webhook_is_413_and_records_nothing(client, account, receiver, engine_app):
    wf = make_workflow(client, account, receiver.url("/hook"))
    big = b'{"x": "' + b"a" * engine_app.config["MAX_PAYLOAD_BYTES"] + b'"}'
    response = client.post(f"/api/webhooks/{wf['id']}", data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert client.get("/api/executions", headers=account.headers).get_json()["items"] == []


def test_unknown_and_disabled_workflows_are_404(client, account, receiver):
    assert client.post("/api/webhooks/wf_unknown", json={}).status_code == 404
    wf = make_workflow(client, account, receiver.url("/hook"), enabled=False)
    assert client.post(f"/api/webhooks/{wf['id']}", json={}).status_code == 404


def test_deleted_workflow_is_404(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    client.delete(f"/api/workflows/{wf['id']}", headers=account.headers)
    assert client.post(f"/api/webhooks/{wf['id']}", json={}).status_code == 404


def test_full_queue_is_503_with_retry_after_and_runs_nothing(engine_app, client, account, receiver):
    receiver.respond("/slow", Reply(hang=True))
    wf = make_workflow(client, account, receiver.url("/slow"))
    capacity = engine_app.config["WORKERS"] + engine_app.config["QUEUE_SIZE"]
    accepted = [client.post(f"/api/webhooks/{wf['id']}", json={}).status_code for _ in range(capacity)]
    assert accepted == [202] * capacity
    refused = client.post(f"/api/webhooks/{wf['id']}", json={"n": "extra"})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert refused.get_json()["error"]["code"] == "queue_full"
    items = client.get("/api/executions", query_string={"limit": 200}, headers=account.headers).get_json()["items"]
    assert len(items) == capacity
    receiver.release()
    for item in items:
        assert wait_status(client, account, item["id"])["status"] == "succeeded"
    assert len(receiver.requests("/slow")) == capacity


def test_wait_returns_the_finished_execution(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}?wait=5", json={"user": {"name": "Ada"}})
    assert response.status_code == 200
    assert response.get_json()["status"] == "succeeded" and response.get_json()["result"]["status_code"] == 200


def test_wait_that_expires_answers_202_with_the_status(client, account, receiver):
    receiver.respond("/slow", Reply(hang=True))
    wf = make_workflow(client, account, receiver.url("/slow"))
    response = client.post(f"/api/webhooks/{wf['id']}?wait=0.3", json={})
    assert response.status_code == 202 and response.get_json()["status"] in ("queued", "running")


@pytest.mark.parametrize("wait", ["0", "31", "-1", "soon"])
def test_bad_wait_is_422(client, account, receiver, wait):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}?wait={wait}", json={})
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "wait"


@pytest.mark.parametrize("header", ["Idempotency-Key", "webhook-id"])
def test_repeated_idempotency_key_returns_the_first_execution(client, account, receiver, header):
    wf = make_workflow(client, account, receiver.url("/hook"))
    first = client.post(f"/api/webhooks/{wf['id']}", json={"n": 1}, headers={header: "evt-1"})
    second = client.post(f"/api/webhooks/{wf['id']}", json={"n": 2}, headers={header: "evt-1"})
    assert first.status_code == second.status_code == 202
    assert first.get_json()["execution_id"] == second.get_json()["execution_id"]
    wait_status(client, account, first.get_json()["execution_id"])
    assert len(client.get("/api/executions", headers=account.headers).get_json()["items"]) == 1
    assert len(receiver.requests("/hook")) == 1


def test_concurrent_duplicates_on_threads_make_one_execution(client, engine_app, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    barrier = threading.Barrier(8, timeout=5)

    def send(_):
        barrier.wait()
        own = engine_app.test_client()
        return own.post(f"/api/webhooks/{wf['id']}", json={}, headers={"Idempotency-Key": "same"}).get_json()

    with ThreadPoolExecutor(8) as pool:
        ids = {body["execution_id"] for body in pool.map(send, range(8))}
    assert len(ids) == 1
    wait_status(client, account, ids.pop())
    assert len(receiver.requests("/hook")) == 1


def test_rate_limited_tenant_gets_429_while_another_is_served(store, receiver):
    from tests.conftest import build_app
    from app import shutdown_app

    app = build_app(store, START_ENGINE=True, WORKERS=2, QUEUE_SIZE=20, TENANT_RATE=0.001, TENANT_BURST=3)
    try:
        client = app.test_client()
        noisy, quiet = make_account(store, "noisy"), make_account(store, "quiet")
        noisy_wf, quiet_wf = make_workflow(client, noisy, receiver.url("/a")), make_workflow(client, quiet, receiver.url("/b"))
        codes = [client.post(f"/api/webhooks/{noisy_wf['id']}", json={}).status_code for _ in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        limited = client.post(f"/api/webhooks/{noisy_wf['id']}", json={})
        assert int(limited.headers["Retry-After"]) >= 1 and limited.get_json()["error"]["code"] == "rate_limited"
        assert client.post(f"/api/webhooks/{quiet_wf['id']}", json={}).status_code == 202
        assert len(client.get("/api/executions", headers=noisy.headers).get_json()["items"]) == 3
    finally:
        shutdown_app(app, grace=5)


class TestSignedWebhooks:
    SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLWlwYWFzLXRlc3Rz"
    BODY = b'{"user": {"name": "Ada"}}'

    @pytest.fixture
    def url(self, client, account, receiver):
        return f"/api/webhooks/{make_workflow(client, account, receiver.url('/hook'), secret=self.SECRET)['id']}"

    def post(self, client, url, headers):
        return client.post(url, data=self.BODY, content_type="application/json", headers=headers)

    def standard(self, msg_id="msg_1", timestamp=None, secret=None):
        timestamp = int(time.time()) if timestamp is None else timestamp
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_standard(secret or self.SECRET, msg_id, timestamp, self.BODY)}

    def test_valid_signatures_are_accepted(self, client, url):
        assert self.post(client, url, self.standard()).status_code == 202
        github = {"X-Hub-Signature-256": sign_github(self.SECRET, self.BODY)}
        assert self.post(client, url, github).status_code == 202

    @pytest.mark.parametrize("headers", [
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": sign_github("other", b'{"user": {"name": "Ada"}}')},
    ])
    def test_missing_or_wrong_signature_is_401(self, client, url, account, headers):
        response = self.post(client, url, headers)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
        assert self.SECRET not in response.get_data(as_text=True)
        assert client.get("/api/executions", headers=account.headers).get_json()["items"] == []

    def test_stale_and_wrong_key_standard_signatures_are_401(self, client, url):
        assert self.post(client, url, self.standard(timestamp=int(time.time()) - 301)).status_code == 401
        assert self.post(client, url, self.standard(secret="whsec_b3RoZXI=")).status_code == 401

    def test_replayed_signature_runs_once(self, client, url, account, receiver):
        headers = self.standard(msg_id="msg_replayed")
        first, again = self.post(client, url, headers), self.post(client, url, headers)
        assert first.get_json()["execution_id"] == again.get_json()["execution_id"]
        wait_status(client, account, first.get_json()["execution_id"])
        assert len(receiver.requests("/hook")) == 1


def test_repeat_is_answered_even_when_the_queue_is_full(engine_app, client, account, receiver):
    receiver.respond("/slow", Reply(hang=True))
    wf = make_workflow(client, account, receiver.url("/slow"))
    first = client.post(f"/api/webhooks/{wf['id']}", json={}, headers={"Idempotency-Key": "k1"})
    capacity = engine_app.config["WORKERS"] + engine_app.config["QUEUE_SIZE"]
    for _ in range(capacity - 1):
        assert client.post(f"/api/webhooks/{wf['id']}", json={}).status_code == 202
    assert client.post(f"/api/webhooks/{wf['id']}", json={}).status_code == 503
    repeat = client.post(f"/api/webhooks/{wf['id']}", json={}, headers={"Idempotency-Key": "k1"})
    assert repeat.status_code == 202 and repeat.get_json() == first.get_json()


@pytest.mark.parametrize("payload, body, content_type, received", [
    ({"active": True, "note": None}, "{{ payload }}", "application/json", {"active": True, "note": None}),
    ({"items": ["a", "b"]}, "{{ payload.items }}", "application/json", ["a", "b"]),
    ({"items": ["a", "b"]}, "first={{ payload.items[0] }}", "text/plain; charset=utf-8", "first=a"),
    ({"ok": False}, "{{ payload.ok }}", "application/json", False),
])
def test_rendered_json_values_are_sent_as_json(client, account, receiver, payload, body, content_type, received):
    wf = client.post("/api/workflows", headers=account.headers, json={
        "name": "json", "trigger_type": "webhook", "action_type": "http_request",
        "config": {"url": receiver.url("/hook"), "body": body}}).get_json()
    response = client.post(f"/api/webhooks/{wf['id']}", json=payload)
    assert wait_status(client, account, response.get_json()["execution_id"])["status"] == "succeeded"
    sent = receiver.requests("/hook")[0]
    assert sent.headers["content-type"] == content_type
    assert (sent.json() if content_type == "application/json" else sent.body.decode()) == received

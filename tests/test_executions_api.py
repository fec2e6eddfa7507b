"""Executions API: manual runs, list and filter, cancel, replay, tenant isolation, redaction."""
from __future__ import annotations

import time

import pytest

from tests.conftest import make_account
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)
from tests.test_webhooks_api import app, make_workflow, wait_status  # noqa: F401 (the engine app fixture too)


@pytest.fixture
def stranger(engine_app):
    return make_account(engine_app.extensions["ipaas"].store, tenant="globex")


def run(client, account, workflow_id, payload=None):
    response = client.post(f"/api/workflows/{workflow_id}/run", json=payload or {}, headers=account.headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["execution_id"]


def test_manual_run_works_for_any_trigger_type(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"), trigger_type="manual")
    done = wait_status(client, account, run(client, account, wf["id"], {"user": {"name": "Bo"}}))
    assert done["status"] == "succeeded" and done["trigger"] == "manual"
    assert receiver.requests("/hook")[0].json()["who"] == "Bo"


def test_list_filters_by_workflow_and_status(client, account, receiver):
    receiver.respond("/bad", Reply(404))
    good = make_workflow(client, account, receiver.url("/hook"))
    bad = make_workflow(client, account, receiver.url("/bad"))
    ids = [run(client, account, good["id"]), run(client, account, bad["id"])]
    for execution_id in ids:
        wait_status(client, account, execution_id)
    by_workflow = client.get("/api/executions", query_string={"workflow_id": bad["id"]}, headers=account.headers)
    assert [item["id"] for item in by_workflow.get_json()["items"]] == [ids[1]]
    failed = client.get("/api/executions", query_string={"status": "failed"}, headers=account.headers).get_json()
    assert [item["id"] for item in failed["items"]] == [ids[1]] and failed["items"][0]["attempts"] == 1
    assert client.get("/api/executions", query_string={"status": "done"}, headers=account.headers).status_code == 422


def test_cancel_of_a_running_execution_ends_it_within_2s(client, account, receiver):
    receiver.respond("/slow", Reply(hang=True))
    wf = make_workflow(client, account, receiver.url("/slow"))
    execution_id = run(client, account, wf["id"])
    receiver.wait_for(1, path="/slow")
    started = time.monotonic()
    response = client.post(f"/api/executions/{execution_id}/cancel", headers=account.headers)
    assert response.status_code == 202
    done = wait_status(client, account, execution_id, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert done["status"] == "cancelled" and done["cancelled_by"] == f"api:{account.user_id}"
    assert done["result"] is None or done["result"].get("status_code") is None


def test_cancel_of_a_finished_execution_is_409(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    execution_id = run(client, account, wf["id"])
    wait_status(client, account, execution_id)
    response = client.post(f"/api/executions/{execution_id}/cancel", headers=account.headers)
    assert response.status_code == 409
    assert wait_status(client, account, execution_id)["status"] == "succeeded"


def test_replay_runs_the_same_payload_again(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    first = run(client, account, wf["id"], {"user": {"name": "Cy"}})
    wait_status(client, account, first)
    response = client.post(f"/api/executions/{first}/replay", headers=account.headers)
    assert response.status_code == 202
    replayed = wait_status(client, account, response.get_json()["execution_id"])
    assert replayed["trigger"] == "replay" and replayed["replay_of"] == first
    assert replayed["payload"] == {"user": {"name": "Cy"}} and len(receiver.requests("/hook")) == 2


def test_replay_of_a_deleted_workflows_execution_is_409(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    execution_id = run(client, account, wf["id"])
    wait_status(client, account, execution_id)
    client.delete(f"/api/workflows/{wf['id']}", headers=account.headers)
    assert client.post(f"/api/executions/{execution_id}/replay", headers=account.headers).status_code == 409


@pytest.mark.parametrize("method, suffix", [("get", ""), ("post", "/cancel"), ("post", "/replay")])
def test_other_tenants_execution_is_404(client, account, stranger, receiver, method, suffix):
    wf = make_workflow(client, account, receiver.url("/hook"))
    execution_id = run(client, account, wf["id"])
    response = getattr(client, method)(f"/api/executions/{execution_id}{suffix}", headers=stranger.headers)
    assert response.status_code == 404
    assert client.get("/api/executions", headers=stranger.headers).get_json()["items"] == []
    assert wait_status(client, account, execution_id)["status"] == "succeeded"


def test_sender_authorization_header_is_never_stored_or_shown(client, account, receiver):
    wf = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{wf['id']}", json={},
                           headers={"Authorization": "Bearer sender-token-123", "Cookie": "session=abc"})
    shown = client.get(f"/api/executions/{response.get_json()['execution_id']}", headers=account.headers)
    assert "sender-token-123" not in shown.get_data(as_text=True) and "session=abc" not in shown.get_data(as_text=True)


def test_slack_webhook_token_never_appears_in_errors(client, account):
    body = {"name": "slack", "trigger_type": "manual", "action_type": "slack_message",
            "config": {"webhook_url": "https://127.0.0.1:1/services/T000/B000/tokenpart123", "text": "hi"}}
    wf = client.post("/api/workflows", json=body, headers=account.headers).get_json()
    done = wait_status(client, account, run(client, account, wf["id"]), timeout=10)
    assert done["status"] == "failed" and "tokenpart123" not in (done["error"] or "")

"""What an execution writes to the log: one outcome line at info carrying every id; its other lines at debug."""
from __future__ import annotations

import logging

import pytest

from app import shutdown_app
from tests.conftest import build_app, make_account
from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.test_webhooks_api import make_workflow, wait_status


@pytest.fixture
def debug_app(store):
    app = build_app(store, START_ENGINE=True, WORKERS=2, QUEUE_SIZE=10, LOG_LEVEL="DEBUG")
    yield app
    shutdown_app(app, grace=5)


def webhook_run(app, receiver):
    """Send one webhook to a new workflow and wait for its outcome; (account, workflow, execution id, request id)."""
    client = app.test_client()
    account = make_account(app.extensions["ipaas"].store)
    workflow = make_workflow(client, account, receiver.url("/hook"))
    response = client.post(f"/api/webhooks/{workflow['id']}", json={"user": {"name": "Ada"}})
    assert response.status_code == 202
    execution_id = response.get_json()["execution_id"]
    assert wait_status(client, account, execution_id)["status"] == "succeeded"
    return account, workflow, execution_id, response.headers["X-Request-ID"]


def test_execution_logs_one_line_at_info_with_every_id(engine_app, receiver, log_lines):
    account, workflow, execution_id, request_id = webhook_run(engine_app, receiver)

    mine = [line for line in log_lines()
            if line.get("request_id") == request_id or line.get("execution_id") == execution_id]
    assert [(line["level"], line["message"]) for line in mine] == [("info", "execution succeeded")]
    assert mine[0]["request_id"] == request_id and mine[0]["execution_id"] == execution_id
    assert (mine[0]["tenant_id"], mine[0]["user_id"], mine[0]["workflow_id"]) == (
        account.tenant_id, account.user_id, workflow["id"])
    assert {"duration_ms", "status", "action_type", "attempts"} <= set(mine[0]["data"])


def test_execution_logs_its_other_lines_at_debug(debug_app, receiver, log_lines):
    logging.getLogger().setLevel(logging.DEBUG)  # log_lines set info; debug_app's level is the point here
    _, _, execution_id, request_id = webhook_run(debug_app, receiver)

    mine = [line for line in log_lines() if line.get("request_id") == request_id and line["logger"].startswith(
        ("app.", "ipaas."))]  # not urllib3's own debug lines
    # The worker may start before the request's access line is written: compare without order.
    assert sorted((line["level"], line["message"]) for line in mine) == [
        ("debug", "execution accepted"), ("debug", "execution started"), ("debug", "request"),
        ("info", "execution succeeded")]
    assert all(line["execution_id"] == execution_id for line in mine if line["message"] != "request")


@pytest.mark.parametrize("path, status", [("/api/webhooks/wf_unknown", 404), ("/healthz", 200)])
def test_a_request_that_accepts_no_execution_keeps_its_access_line_at_info(engine_app, log_lines, path, status):
    client = engine_app.test_client()
    response = client.post(path, json={}) if "webhooks" in path else client.get(path)
    assert response.status_code == status

    access = [line for line in log_lines() if line["message"] == "request"]
    assert [(line["level"], line["data"]["path"], line["data"]["status"]) for line in access] == [
        ("info", path, status)]

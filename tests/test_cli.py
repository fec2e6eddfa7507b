"""Admin commands through Flask's CLI runner on the app's store."""
from __future__ import annotations

import json

from tests.conftest import make_account


def test_users_create_prints_a_working_key_last(runner, client):
    result = runner.invoke(args=["users", "create", "ada@example.com", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("ipk_") and " " not in key
    assert client.get("/api/workflows", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_users_create_reuses_the_tenant_and_refuses_duplicate_email(runner, app):
    assert runner.invoke(args=["users", "create", "a@example.com", "--tenant", "acme"]).exit_code == 0
    assert runner.invoke(args=["users", "create", "b@example.com", "--tenant", "acme"]).exit_code == 0
    store = app.extensions["ipaas"].store
    assert store.get_user_by_email("a@example.com").tenant_id == store.get_user_by_email("b@example.com").tenant_id
    duplicate = runner.invoke(args=["users", "create", "A@example.com", "--tenant", "other"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output


def test_keys_create_and_revoke(runner, client, app):
    runner.invoke(args=["users", "create", "ada@example.com", "--tenant", "acme"])
    key = runner.invoke(args=["keys", "create", "ada@example.com"]).output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/workflows", headers=headers).status_code == 200
    prefix = "_".join(key.split("_")[:2])
    assert runner.invoke(args=["keys", "revoke", prefix]).exit_code == 0
    assert client.get("/api/workflows", headers=headers).status_code == 401
    assert runner.invoke(args=["keys", "revoke", prefix]).exit_code != 0


def test_keys_create_for_unknown_user_fails(runner):
    result = runner.invoke(args=["keys", "create", "nobody@example.com"])
    assert result.exit_code != 0 and "no user" in result.output


def test_workflows_list_filters_by_tenant(runner, client, app):
    store = app.extensions["ipaas"].store
    acme, globex = make_account(store, "acme"), make_account(store, "globex")
    for account, name in ((acme, "a"), (globex, "g")):
        client.post("/api/workflows", headers=account.headers, json={
            "name": name, "trigger_type": "manual", "action_type": "http_request",
            "config": {"url": "https://example.com/"}})
    rows = [json.loads(line) for line in runner.invoke(args=["workflows", "list", "--tenant", acme.tenant_id]).output.splitlines()]
    assert [row["name"] for row in rows] == ["a"]
    assert len(runner.invoke(args=["workflows", "list"]).output.splitlines()) == 2


def test_init_db_is_idempotent(runner):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0


def test_every_command_has_help(runner):
    for args in (["init-db"], ["users", "create"], ["keys", "create"], ["keys", "revoke"], ["workflows", "list"],
                 ["executions", "list"], ["executions", "purge"]):
        result = runner.invoke(args=[*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output and len(result.output.splitlines()) > 3


def _finished_execution(store, account, *, days_old: float, status: str = "succeeded"):
    from datetime import timedelta

    from app.models import Execution, ExecutionStatus, Workflow, new_id, utcnow

    now = utcnow() - timedelta(days=days_old)
    workflow = store.create_workflow(Workflow(
        id=new_id("wf", now), tenant_id=account.tenant_id, user_id=account.user_id, name="w", trigger_type="manual",
        action_type="http_request", config={"url": "https://example.com/"}, enabled=True, created_at=now, updated_at=now))
    execution, _ = store.create_execution(Execution(
        id=new_id("ex", now), tenant_id=account.tenant_id, workflow_id=workflow.id, trigger="manual",
        status=ExecutionStatus(status), payload={}, created_at=now))
    return execution


def test_executions_list_filters_by_status_and_workflow(runner, app, account):
    store = app.extensions["ipaas"].store
    done = _finished_execution(store, account, days_old=0)
    queued = _finished_execution(store, account, days_old=0, status="queued")
    rows = [json.loads(line) for line in runner.invoke(args=["executions", "list", "--status", "queued"]).output.splitlines()]
    assert [row["id"] for row in rows] == [queued.id] and "payload" not in rows[0]
    rows = runner.invoke(args=["executions", "list", "--workflow", done.workflow_id]).output.splitlines()
    assert [json.loads(row)["id"] for row in rows] == [done.id]
    assert runner.invoke(args=["executions", "list", "--status", "nope"]).exit_code != 0


def test_executions_purge_removes_only_old_finished_ones(runner, app, account):
    store = app.extensions["ipaas"].store
    old, recent = _finished_execution(store, account, days_old=40), _finished_execution(store, account, days_old=1)
    old_queued = _finished_execution(store, account, days_old=40, status="queued")
    result = runner.invoke(args=["executions", "purge", "--older-than", "30"])
    assert result.exit_code == 0 and "purged 1" in result.output
    assert store.get_execution(None, old.id) is None
    assert store.get_execution(None, recent.id) is not None and store.get_execution(None, old_queued.id) is not None
    assert runner.invoke(args=["executions", "purge", "--older-than", "-1"]).exit_code != 0


def test_workflows_list_shows_action_type_as_the_api_does(runner, client, account, other_account):
    def create(who, body):
        response = client.post("/api/workflows", json={"name": "w", "trigger_type": "webhook", **body},
                               headers=who.headers)
        assert response.status_code == 201, response.json
        return response.json["id"]

    one = create(account, {"action_type": "http_request", "config": {"url": "https://x.test/"}})
    two = create(account, {"steps": [
        {"name": "lookup", "action_type": "http_request", "config": {"url": "https://x.test/"}},
        {"name": "notify", "action_type": "http_request", "config": {"url": "https://y.test/"}}]})
    create(other_account, {"action_type": "http_request", "config": {"url": "https://z.test/"}})

    result = runner.invoke(args=["workflows", "list", "--tenant", account.tenant_id])
    listed = {line["id"]: line for line in map(json.loads, result.output.splitlines())}
    assert set(listed) == {one, two}
    assert (listed[one]["action_type"], listed[one]["steps"]) == ("http_request", ["main"])
    assert (listed[two]["action_type"], listed[two]["steps"]) == (None, ["lookup", "notify"])

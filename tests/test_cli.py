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

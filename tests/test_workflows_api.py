"""The workflows API: CRUD, validation, tenant isolation, pagination, write-only secrets."""
from __future__ import annotations

import json

import pytest

SLACK = {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET", "text": "hi {{ payload.name }}"}
HOSTILE = ["'; DROP TABLE workflows; --", "\" OR 1=1 --", "Robert'); DELETE FROM executions;--", "ü…\u202e漢字", "%s%n{{"]


def new_workflow(**overrides):
    body = {"name": "notify", "trigger_type": "webhook", "action_type": "slack_message", "config": dict(SLACK)}
    body.update(overrides)
    return body


def create(client, account, **overrides):
    response = client.post("/api/workflows", json=new_workflow(**overrides), headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_returns_the_workflow_with_its_webhook_url(client, account):
    body = create(client, account)
    assert body["name"] == "notify" and body["enabled"] is True and body["has_secret"] is False
    assert body["webhook_url"] == f"http://localhost/api/webhooks/{body['id']}"
    assert set(body) >= {"id", "created_at", "updated_at", "config", "trigger_type", "action_type"}


def test_manual_workflows_have_no_webhook_url(client, account):
    assert "webhook_url" not in create(client, account, trigger_type="manual")


def test_get_list_update_delete_round_trip(client, account):
    wf = create(client, account)
    url = f"/api/workflows/{wf['id']}"
    assert client.get(url, headers=account.headers).get_json()["id"] == wf["id"]
    patched = client.patch(url, json={"enabled": False}, headers=account.headers).get_json()
    assert patched["enabled"] is False and patched["name"] == "notify"
    replaced = client.put(url, json=new_workflow(name="renamed"), headers=account.headers).get_json()
    assert replaced["name"] == "renamed" and replaced["enabled"] is True
    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404
    assert client.get("/api/workflows", headers=account.headers).get_json()["items"] == []


def test_put_accepts_the_object_it_returned(client, account):
    wf = create(client, account)
    wf["name"] = "edited"
    response = client.put(f"/api/workflows/{wf['id']}", json=wf, headers=account.headers)
    assert response.status_code == 200 and response.get_json()["name"] == "edited"


def test_secret_is_write_only_and_kept_by_put(client, app, account):
    wf = create(client, account, secret="s3cr3t-value")
    assert "secret" not in wf and wf["has_secret"] is True
    client.put(f"/api/workflows/{wf['id']}", json=new_workflow(name="x"), headers=account.headers)
    shown = client.get(f"/api/workflows/{wf['id']}", headers=account.headers)
    assert "s3cr3t-value" not in shown.get_data(as_text=True) and shown.get_json()["has_secret"] is True
    cleared = client.patch(f"/api/workflows/{wf['id']}", json={"secret": None}, headers=account.headers)
    assert cleared.get_json()["has_secret"] is False


def test_pagination_walks_every_workflow_once(client, account):
    ids = {create(client, account, name=f"wf{i}")["id"] for i in range(5)}
    seen, cursor = [], None
    for _ in range(5):
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/workflows", query_string=query, headers=account.headers).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == ids and seen == sorted(seen, reverse=True)


@pytest.mark.parametrize("verb", ["get", "put", "patch", "delete"])
def test_other_tenants_workflow_is_not_found(client, account, other_account, verb):
    wf = create(client, account)
    response = getattr(client, verb)(f"/api/workflows/{wf['id']}", json=new_workflow(), headers=other_account.headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert client.get(f"/api/workflows/{wf['id']}", headers=account.headers).get_json()["name"] == "notify"


def test_other_tenant_cannot_run_or_list(client, account, other_account):
    wf = create(client, account)
    assert client.post(f"/api/workflows/{wf['id']}/run", json={}, headers=other_account.headers).status_code == 404
    assert client.get("/api/workflows", headers=other_account.headers).get_json()["items"] == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer ipk_00000000_" + "A" * 43}])
def test_missing_or_wrong_key_is_401(client, headers):
    response = client.get("/api/workflows", headers=headers)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


def test_revoked_key_is_401(client, app, account):
    prefix = "_".join(account.key.split("_")[:2])
    assert app.extensions["ipaas"].store.revoke_api_key(prefix, now=__import__("app.models").models.utcnow())
    assert client.get("/api/workflows", headers=account.headers).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 42}, "name"),
    ({"trigger_type": "email"}, "trigger_type"),
    ({"action_type": "fax"}, "action_type"),
    ({"config": "nope"}, "config"),
    ({"config": {"text": "hi"}}, "config.webhook_url"),
    ({"config": {**SLACK, "webhook_url": "ftp://example.com/x"}}, "config.webhook_url"),
    ({"config": {**SLACK, "webhook_url": "javascript:alert(1)"}}, "config.webhook_url"),
    ({"config": {**SLACK, "text": "{{ payload.name "}}, "config.text"),
    ({"action_type": "http_request", "config": {"url": "file:///etc/passwd"}}, "config.url"),
    ({"enabled": "yes"}, "enabled"),
    ({"secret": 123}, "secret"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_workflow_is_422_naming_the_field(client, account, body, field):
    response = client.post("/api/workflows", json=new_workflow(**body), headers=account.headers)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == field
    assert client.get("/api/workflows", headers=account.headers).get_json()["items"] == []


@pytest.mark.parametrize("missing", ["name", "trigger_type", "action_type", "config"])
def test_missing_required_field_is_422(client, account, missing):
    body = new_workflow()
    del body[missing]
    response = client.post("/api/workflows", json=body, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == missing


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b'{"name": }'])
def test_malformed_json_is_400(client, account, raw):
    response = client.post("/api/workflows", data=raw, content_type="application/json", headers=account.headers)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("body", [[], "string", 5, None])
def test_non_object_body_is_422(client, account, body):
    response = client.post("/api/workflows", data=json.dumps(body), content_type="application/json",
                           headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "body"


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_stored_verbatim(client, account, text):
    literal = text.replace("{", "")  # config strings are templates; the name is not
    config = {"url": f"https://example.com/{literal}", "headers": {"X-Note": literal}, "body": literal}
    wf = create(client, account, name=text, action_type="http_request", config=config)
    shown = client.get(f"/api/workflows/{wf['id']}", headers=account.headers).get_json()
    assert shown["name"] == text.strip() and shown["config"]["headers"]["X-Note"] == literal


@pytest.mark.parametrize("limit", ["0", "201", "abc", "-1"])
def test_bad_limit_is_422(client, account, limit):
    response = client.get("/api/workflows", query_string={"limit": limit}, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "limit"


def test_update_validates_the_merged_workflow(client, account):
    wf = create(client, account)
    response = client.patch(f"/api/workflows/{wf['id']}", json={"action_type": "http_request"}, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "config.url"
    assert client.get(f"/api/workflows/{wf['id']}", headers=account.headers).get_json()["action_type"] == "slack_message"

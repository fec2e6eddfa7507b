"""The credentials API (write-only data, per-type checks, tenant scoping, 409 while used) and workflows that
name a credential or run on a schedule."""
from __future__ import annotations

import pytest

SMTP = {"host": "smtp.example.com", "port": 587, "security": "starttls", "from": "bot@example.com",
        "username": "bot", "password": "pw-smtp-SECRET"}
HEADER = {"name": "X-Api-Key", "value": "hdr-SECRET-value"}
BASIC = {"username": "ann", "password": "basic-SECRET-pw"}


def make(client, account, kind="http_header", data=None, name="key"):
    response = client.post("/api/credentials", json={"name": name, "type": kind, "data": data or HEADER},
                           headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def http_workflow(credential_id=None, **fields):
    """A workflow of one http_request step; with a credential it is written as steps, as it must be."""
    step = {"name": "main", "action_type": "http_request", "config": {"url": "https://api.example.com/x"},
            "credential_id": credential_id}
    return {"name": "call", "trigger_type": "webhook", "steps": [step], **fields}


def test_create_shows_no_data(client, account):
    body = make(client, account, "smtp", SMTP, name="mail")
    assert set(body) == {"id", "name", "type", "created_at", "updated_at"}
    assert body["name"] == "mail" and body["type"] == "smtp" and body["id"].startswith("cr_")
    for response in (client.get(f"/api/credentials/{body['id']}", headers=account.headers),
                     client.get("/api/credentials", headers=account.headers)):
        assert response.status_code == 200 and "SECRET" not in response.get_data(as_text=True)
    assert client.get("/api/credentials", headers=account.headers).get_json()["items"] == [body]


def test_put_replaces_and_delete_removes(client, account):
    body = make(client, account)
    url = f"/api/credentials/{body['id']}"
    replaced = client.put(url, json={"name": "basic", "type": "http_basic", "data": BASIC}, headers=account.headers)
    assert replaced.status_code == 200 and replaced.get_json()["type"] == "http_basic"
    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404


def test_other_tenants_credentials_are_not_found(client, account, other_account):
    body = make(client, account)
    url = f"/api/credentials/{body['id']}"
    assert client.get(url, headers=other_account.headers).status_code == 404
    assert client.put(url, json={"name": "x", "type": "http_header", "data": HEADER},
                      headers=other_account.headers).status_code == 404
    assert client.delete(url, headers=other_account.headers).status_code == 404
    assert client.get("/api/credentials", headers=other_account.headers).get_json()["items"] == []
    assert client.get(url, headers=account.headers).status_code == 200


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({"type": "smtp", "data": SMTP}, "name"),
    ({"name": "", "type": "smtp", "data": SMTP}, "name"),
    ({"name": "x", "type": "ftp", "data": {}}, "type"),
    ({"name": "x", "type": {}, "data": {}}, "type"),
    ({"name": "x", "type": "smtp"}, "data"),
    ({"name": "x", "type": "smtp", "data": "host=a"}, "data"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "host": ""}}, "data.host"),
    ({"name": "x", "type": "smtp", "data": {k: v for k, v in SMTP.items() if k != "host"}}, "data.host"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "port": "587"}}, "data.port"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "port": 70000}}, "data.port"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "security": "ssl"}}, "data.security"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "from": "nobody"}}, "data.from"),
    ({"name": "x", "type": "smtp", "data": {k: v for k, v in SMTP.items() if k != "password"}}, "data.password"),
    ({"name": "x", "type": "smtp", "data": {**SMTP, "tls": True}}, "data.tls"),
    ({"name": "x", "type": "http_header", "data": {"name": "Bad Name", "value": "v"}}, "data.name"),
    ({"name": "x", "type": "http_header", "data": {"name": "X-K", "value": "a\r\nInjected: 1"}}, "data.value"),
    ({"name": "x", "type": "http_basic", "data": {"username": "ann"}}, "data.password"),
    ({"name": "x", "type": "http_basic", "data": {"username": "ann", "password": 5}}, "data.password"),
])
def test_bad_credentials_are_refused_naming_the_field(client, account, body, field):
    response = client.post("/api/credentials", json=body, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field
    assert "SECRET" not in response.get_data(as_text=True)
    assert client.get("/api/credentials", headers=account.headers).get_json()["items"] == []


def test_a_workflow_names_a_credential_of_its_tenant_and_type(client, account, other_account):
    mine = make(client, account)
    response = client.post("/api/workflows", json=http_workflow(mine["id"]), headers=account.headers)
    assert response.status_code == 201 and response.get_json()["steps"][0]["credential_id"] == mine["id"]
    smtp = make(client, account, "smtp", SMTP)
    theirs = make(client, other_account)
    for credential_id, why in ((theirs["id"], "no credential"), ("cr_nope", "no credential"),
                               (smtp["id"], "http_header or http_basic")):
        refused = client.post("/api/workflows", json=http_workflow(credential_id), headers=account.headers)
        error = refused.get_json()["error"]
        assert refused.status_code == 422 and error["field"] == "steps[0].credential_id" and why in error["message"]
    slack = {"name": "s", "trigger_type": "webhook", "steps": [
        http_workflow()["steps"][0],
        {"name": "tell", "action_type": "slack_message", "credential_id": mine["id"],
         "config": {"webhook_url": "https://hooks.slack.com/services/T/B/X", "text": "hi"}}]}
    refused = client.post("/api/workflows", json=slack, headers=account.headers)
    assert refused.status_code == 422 and refused.get_json()["error"]["field"] == "steps[1].credential_id"
    email = {"name": "e", "trigger_type": "webhook", "action_type": "email",
             "config": {"to": "a@example.com", "subject": "s", "text": "t"}}
    refused = client.post("/api/workflows", json=email, headers=account.headers)  # email needs a credential
    assert refused.status_code == 422 and refused.get_json()["error"]["field"] == "steps[0].credential_id"


def test_a_credential_in_use_cannot_be_deleted_or_change_type(client, account):
    credential = make(client, account)
    workflow = client.post("/api/workflows", json=http_workflow(credential["id"], name="nightly"),
                           headers=account.headers).get_json()
    url = f"/api/credentials/{credential['id']}"
    refused = client.delete(url, headers=account.headers)
    assert refused.status_code == 409 and workflow["id"] in refused.get_json()["error"]["message"]
    changed = client.put(url, json={"name": "b", "type": "http_basic", "data": BASIC}, headers=account.headers)
    assert changed.status_code == 409
    client.patch(f"/api/workflows/{workflow['id']}", json=http_workflow(None), headers=account.headers)
    assert client.delete(url, headers=account.headers).status_code == 204


# --- schedules through the workflows API ---------------------------------------------------------------
def scheduled(**fields):
    return http_workflow(trigger_type="schedule", schedule={"cron": "*/5 * * * *"}, **fields)


def test_a_scheduled_workflow_shows_its_schedule_and_next_run(client, account):
    body = client.post("/api/workflows", json=scheduled(), headers=account.headers).get_json()
    assert body["schedule"] == {"cron": "*/5 * * * *", "timezone": "UTC"}
    minute = int(body["next_run_at"][14:16])
    assert body["next_run_at"].endswith(":00.000Z") and minute % 5 == 0
    assert "webhook_url" not in body
    again = client.put(f"/api/workflows/{body['id']}", json=body, headers=account.headers)  # GET-edit-PUT
    assert again.status_code == 200 and again.get_json()["schedule"] == body["schedule"]
    patched = client.patch(f"/api/workflows/{body['id']}", json={"trigger_type": "webhook"}, headers=account.headers)
    assert patched.status_code == 200 and "schedule" not in patched.get_json()


@pytest.mark.parametrize("fields, field", [
    ({"schedule": None}, "schedule"),
    ({"schedule": {"cron": "* * * * * *"}}, "schedule.cron"),
    ({"schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Atlantis"}}, "schedule.timezone"),
    ({"trigger_type": "webhook"}, "schedule"),
])
def test_bad_schedules_are_refused_naming_the_field(client, account, fields, field):
    response = client.post("/api/workflows", json={**scheduled(), **fields}, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field

"""Dashboard workflow pages through the Flask test client: forms, validation beside fields, tenancy, escaping."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from app.models import utcnow
from tests.dashboard import HOSTILE, field_errors, make_workflow, post, principal_of, record_execution
from tests.dashboard import services, signed_in  # noqa: F401 (fixtures)

GOOD_FORM = {"name": "orders", "trigger_type": "webhook", "action_type": "http_request",
             "config": json.dumps({"url": "http://127.0.0.1:9/hook"}), "enabled": "on"}


def test_ui_workflows_empty_list_says_what_to_do(signed_in):
    page = signed_in.get("/ui/workflows").text
    assert "No workflows yet." in page and 'href="/ui/workflows/new"' in page


def test_ui_workflow_created_through_the_form(signed_in, services, account):
    response = post(signed_in, "/ui/workflows/new", GOOD_FORM)
    assert response.status_code == 303
    [workflow] = services.list_workflows(principal_of(account), limit=10, cursor=None).items
    assert response.location == f"/ui/workflows/{workflow.id}"
    assert (workflow.name, workflow.config, workflow.enabled) == ("orders", {"url": "http://127.0.0.1:9/hook"}, True)
    page = signed_in.get(response.location).text
    assert f"http://localhost/api/webhooks/{workflow.id}" in page and "curl -X POST" in page
    assert 'data-copy="#webhook-url"' in page


@pytest.mark.parametrize("change, field, message", [
    ({"name": ""}, "name", "name must be 1 to 200 characters"),
    ({"name": "x" * 201}, "name", "name must be 1 to 200 characters"),
    ({"trigger_type": "carrier-pigeon"}, "trigger_type", "trigger_type must be one of"),
    ({"action_type": "fax"}, "action_type", "action_type must be one of"),
    ({"config": "{not json"}, "config", "config is not valid JSON"),
    ({"config": "[1, 2]"}, "config", "config must be a JSON object"),
    ({"config": json.dumps({"url": "ftp://example.com/"})}, "config", "config.url must be an http"),
    ({"config": json.dumps({"url": "http://x.example/", "body": "{{ payload.id"})}, "config", "config.body"),
    ({"secret": "s" * 513}, "secret", "secret must be a string of 1 to 512"),
])
def test_ui_workflow_form_shows_the_api_error_beside_its_field(signed_in, services, account, change, field, message):
    response = post(signed_in, "/ui/workflows/new", {**GOOD_FORM, **change})
    assert response.status_code in (400, 422)
    errors = field_errors(response.text)
    assert list(errors) == [field] and message in errors[field], errors
    assert f'aria-describedby="{field}-error"' in response.text
    assert services.list_workflows(principal_of(account), limit=10, cursor=None).items == []


def test_ui_workflow_form_never_echoes_the_secret(signed_in):
    response = post(signed_in, "/ui/workflows/new", {**GOOD_FORM, "name": "", "secret": "hush-hush-123"})
    assert response.status_code == 422 and "hush-hush-123" not in response.text


def test_ui_workflow_edit_keeps_the_secret_unless_removed(signed_in, services, account):
    workflow = make_workflow(services, account, secret="s3cret-value")
    page = signed_in.get(f"/ui/workflows/{workflow.id}/edit").text
    assert "s3cret-value" not in page and 'name="remove_secret"' in page
    assert post(signed_in, f"/ui/workflows/{workflow.id}/edit", {**GOOD_FORM, "name": "renamed"}).status_code == 303
    kept = services.get_workflow(principal_of(account), workflow.id)
    assert (kept.name, services.reveal_secret(kept)) == ("renamed", "s3cret-value")  # stored encrypted
    post(signed_in, f"/ui/workflows/{workflow.id}/edit", {**GOOD_FORM, "remove_secret": "on"})
    assert services.get_workflow(principal_of(account), workflow.id).secret is None


def test_ui_workflow_edit_error_changes_nothing(signed_in, services, account):
    workflow = make_workflow(services, account)
    response = post(signed_in, f"/ui/workflows/{workflow.id}/edit", {**GOOD_FORM, "config": "{"})
    assert response.status_code == 400 and "config" in field_errors(response.text)
    assert services.get_workflow(principal_of(account), workflow.id) == workflow


def test_ui_workflow_disable_and_enable(signed_in, services, account):
    workflow = make_workflow(services, account)
    assert post(signed_in, f"/ui/workflows/{workflow.id}/enabled", {"enabled": "false"}).status_code == 303
    assert services.get_workflow(principal_of(account), workflow.id).enabled is False
    assert "answers 404 until you enable it" in signed_in.get(f"/ui/workflows/{workflow.id}").text
    post(signed_in, f"/ui/workflows/{workflow.id}/enabled", {"enabled": "true"})
    assert services.get_workflow(principal_of(account), workflow.id).enabled is True


def test_ui_workflow_delete_asks_first(signed_in, services, account):
    workflow = make_workflow(services, account)
    page = signed_in.get(f"/ui/workflows/{workflow.id}/delete").text
    assert "This cannot be undone." in page and 'name="csrf_token"' in page
    assert services.get_workflow(principal_of(account), workflow.id) is not None
    response = post(signed_in, f"/ui/workflows/{workflow.id}/delete")
    assert response.status_code == 303 and response.location == "/ui/workflows"
    assert services.list_workflows(principal_of(account), limit=10, cursor=None).items == []


def test_ui_run_now_refuses_a_payload_that_is_not_json(signed_in, services, account):
    workflow = make_workflow(services, account)
    response = post(signed_in, f"/ui/workflows/{workflow.id}/run", {"payload": "{oops"})
    assert response.status_code == 400 and "payload is not valid JSON" in field_errors(response.text)["payload"]
    assert services.list_executions(principal_of(account), workflow_id=None, status=None, limit=5,
                                    cursor=None).items == []


@pytest.mark.parametrize("method, path", [
    ("GET", "/ui/workflows/{id}"), ("GET", "/ui/workflows/{id}/edit"), ("GET", "/ui/workflows/{id}/delete"),
    ("POST", "/ui/workflows/{id}/edit"), ("POST", "/ui/workflows/{id}/enabled"), ("POST", "/ui/workflows/{id}/delete"),
    ("POST", "/ui/workflows/{id}/run"), ("GET", "/ui/executions/{ex}"), ("POST", "/ui/executions/{ex}/cancel"),
    ("POST", "/ui/executions/{ex}/replay"),
])
def test_ui_other_tenants_objects_are_not_found(signed_in, services, other_account, method, path):
    workflow = make_workflow(services, other_account, enabled=True)
    execution = record_execution(services, workflow)
    url = path.format(id=workflow.id, ex=execution.id)
    response = post(signed_in, url, GOOD_FORM) if method == "POST" else signed_in.get(url)
    assert response.status_code == 404 and "Not found" in response.text
    assert services.get_workflow(principal_of(other_account), workflow.id) == workflow
    assert services.get_execution(principal_of(other_account), execution.id) == execution


@pytest.mark.parametrize("path", ["/ui/workflows/new", "/ui/workflows/{id}/edit", "/ui/workflows/{id}/enabled",
                                  "/ui/workflows/{id}/delete", "/ui/workflows/{id}/run"])
@pytest.mark.parametrize("token", [None, "", "forged"])
def test_ui_workflow_forms_refuse_a_missing_or_wrong_csrf_token(signed_in, services, account, path, token):
    workflow = make_workflow(services, account)
    data = {**GOOD_FORM, "name": "changed", "enabled": "false"}
    if token is not None:
        data["csrf_token"] = token
    response = signed_in.post(path.format(id=workflow.id), data=data)
    assert response.status_code == 403 and "did not come from this dashboard" in response.text
    assert services.list_workflows(principal_of(account), limit=10, cursor=None).items == [workflow]


def test_ui_hostile_workflow_name_is_shown_as_text(signed_in, services, account):
    workflow = make_workflow(services, account, name=HOSTILE)
    for path in ("/ui/workflows", f"/ui/workflows/{workflow.id}", f"/ui/workflows/{workflow.id}/edit",
                 f"/ui/workflows/{workflow.id}/delete", "/ui/executions"):
        page = signed_in.get(path).text
        assert HOSTILE not in page and "&lt;script&gt;alert(" in page, path


def test_ui_workflows_list_shows_the_last_run(signed_in, services, account):
    quiet = make_workflow(services, account, name="quiet")
    busy = make_workflow(services, account, name="busy")
    record_execution(services, busy, when=utcnow() - timedelta(minutes=1))
    latest = record_execution(services, busy, status="failed")
    page = signed_in.get("/ui/workflows").text
    row = re.search(r"<tr>\s*<td><a href=\"/ui/workflows/%s\">busy.*?</tr>" % busy.id, page, re.S).group(0)
    assert f"/ui/executions/{latest.id}" in row and "status-failed" in row and "<time datetime=" in row
    quiet_row = re.search(r"<tr>\s*<td><a href=\"/ui/workflows/%s\">quiet.*?</tr>" % quiet.id, page, re.S).group(0)
    assert "never run" in quiet_row

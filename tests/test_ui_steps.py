"""Dashboard pages for workflows of several steps and on a schedule, through the Flask test client: the
execution's steps (live part), the workflow form's steps textarea and schedule inputs, the list's trigger."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from app.models import StepRecord, StepStatus, utcnow
from tests.dashboard import HOSTILE, field_errors, make_credential, make_workflow, post, principal_of, record_execution
from tests.dashboard import services, signed_in  # noqa: F401 (fixtures)

TWO_STEPS = [
    {"name": "lookup", "action_type": "http_request", "config": {"url": "http://127.0.0.1:9/lookup"}},
    {"name": "notify", "action_type": "http_request", "condition": "steps.lookup.status_code == 200",
     "config": {"url": "http://127.0.0.1:9/notify", "body": {"name": "{{ steps.lookup.body.name }}"}}},
]
STEPS_FORM = {"name": "two steps", "trigger_type": "webhook", "mode": "steps", "steps": json.dumps(TWO_STEPS),
              "action_type": "http_request", "config": "ignored: the radio says steps", "enabled": "on"}
SCHEDULE_FORM = {"name": "nightly", "trigger_type": "schedule", "schedule.cron": "30 2 * * *",
                 "schedule.timezone": "Europe/Berlin", "mode": "single", "action_type": "http_request",
                 "config": json.dumps({"url": "http://127.0.0.1:9/hook"}), "enabled": "on"}


def step_block(html: str, name: str) -> str:
    return re.search(r'<li class="step" id="step-%s">.*?</li>' % name, html, re.S).group(0)


def workflows_of(services, account) -> list:
    return services.list_workflows(principal_of(account), limit=10, cursor=None).items


def test_ui_running_execution_shows_each_step_in_its_live_part(signed_in, services, account):
    workflow = make_workflow(services, account, steps=TWO_STEPS)
    execution = record_execution(services, workflow)
    started = utcnow()
    services.store.claim_execution(execution.id, owner="test", now=started)
    services.store.record_step(execution.id, owner="test", step=StepRecord(
        "lookup", 0, StepStatus.SUCCEEDED, 1, started, started + timedelta(milliseconds=1500),
        result={"status_code": 200, "body": '{"name": "Ada"}'}))
    for response in (signed_in.get(f"/ui/executions/{execution.id}"),
                     signed_in.get(f"/ui/executions/{execution.id}", headers={"HX-Request": "true"})):
        live = response.text[response.text.index('<div id="execution"'):]
        assert 'hx-trigger="every 1s"' in live  # the steps are inside the block that refreshes itself
        lookup, notify = step_block(live, "lookup"), step_block(live, "notify")
        assert 'status-succeeded">succeeded' in lookup and "1 attempt<" in lookup and "1.5 s" in lookup
        assert "&#34;status_code&#34;: 200" in lookup and "<time datetime=" in lookup
        assert 'status-running">running' in notify and "in progress" in notify
        assert live.index('id="step-lookup"') < live.index('id="step-notify"')


def test_ui_finished_execution_shows_step_errors_in_full_and_results_as_the_api(signed_in, services, account):
    workflow = make_workflow(services, account, steps=TWO_STEPS)
    execution = record_execution(services, workflow)
    now = utcnow()
    error = f"HTTP 500 from the partner: {HOSTILE} " + "detail " * 100
    services.store.claim_execution(execution.id, owner="test", now=now)
    services.store.finish_execution(execution.id, owner="test", status=StepStatus.FAILED, attempts=3, now=now,
                                    error=error, steps=[
        StepRecord("lookup", 0, StepStatus.SUCCEEDED, 1, now, now, result={"headers": {"x-token": "[REDACTED]"}}),
        StepRecord("notify", 1, StepStatus.FAILED, 3, now, now, error=error)])
    page = signed_in.get(f"/ui/executions/{execution.id}").text
    assert HOSTILE not in page and "hx-trigger" not in page
    notify = step_block(page, "notify")
    assert 'status-failed">failed' in notify and "3 attempts" in notify
    assert error.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").strip() in notify  # all of it
    assert "[REDACTED]" in step_block(page, "lookup")
    api = signed_in.get(f"/api/executions/{execution.id}", headers=account.headers).get_json()
    assert [(s["name"], s["status"]) for s in api["steps"]] == [("lookup", "succeeded"), ("notify", "failed")]


def test_ui_queued_execution_lists_its_steps_as_pending(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account, steps=TWO_STEPS))
    page = signed_in.get(f"/ui/executions/{execution.id}").text
    assert all('status-pending">pending' in step_block(page, name) for name in ("lookup", "notify"))
    assert "Runs when the steps before it are done." in page


def test_ui_workflow_of_several_steps_created_and_edited_through_the_form(signed_in, services, account):
    response = post(signed_in, "/ui/workflows/new", STEPS_FORM)
    assert response.status_code == 303, field_errors(response.text)
    [workflow] = workflows_of(services, account)
    assert [step.name for step in workflow.steps] == ["lookup", "notify"]
    assert workflow.steps[1].condition == "steps.lookup.status_code == 200"
    page = signed_in.get(response.location).text
    assert "2 steps: lookup, notify" in page and 'id="steps-json"' in page
    form = signed_in.get(f"/ui/workflows/{workflow.id}/edit").text
    assert 'value="steps" id="mode-steps" checked' in form and "steps.lookup.status_code == 200" in form
    changed = [*TWO_STEPS, {"name": "audit", "action_type": "http_request", "config": {"url": "http://127.0.0.1:9/a"}}]
    response = post(signed_in, f"/ui/workflows/{workflow.id}/edit", {**STEPS_FORM, "steps": json.dumps(changed)})
    assert response.status_code == 303
    assert [s.name for s in services.get_workflow(principal_of(account), workflow.id).steps] == [
        "lookup", "notify", "audit"]
    assert "3 steps: lookup, notify, audit" in signed_in.get("/ui/workflows").text


def test_ui_one_step_with_a_credential_is_written_as_steps(signed_in, services, account):
    credential = make_credential(services, account)
    steps = [{**TWO_STEPS[0], "credential_id": credential.id}]
    assert post(signed_in, "/ui/workflows/new", {**STEPS_FORM, "steps": json.dumps(steps)}).status_code == 303
    [workflow] = workflows_of(services, account)
    assert workflow.steps[0].credential_id == credential.id
    assert 'value="steps" id="mode-steps" checked' in signed_in.get(f"/ui/workflows/{workflow.id}/edit").text


@pytest.mark.parametrize("steps, message", [
    ("", "steps is empty: write a JSON list of steps"),
    ("[{", "steps is not valid JSON"),
    ("{}", "steps must be a list of 1 to 20 steps"),
    (json.dumps([TWO_STEPS[0], {**TWO_STEPS[1], "condition": "payload.amount >"}]), "steps[1].condition"),
    (json.dumps([TWO_STEPS[0], {**TWO_STEPS[1], "name": "lookup"}]), "steps[1].name 'lookup' is already"),
    (json.dumps([{**TWO_STEPS[0], "credential_id": "cr_nope"}]), "steps[0].credential_id: no credential 'cr_nope'"),
    (json.dumps([{**TWO_STEPS[0], "name": f"x{HOSTILE}"}]), "steps[0].name"),
])
def test_ui_steps_error_is_shown_beside_the_steps_field(signed_in, services, account, steps, message):
    response = post(signed_in, "/ui/workflows/new", {**STEPS_FORM, "steps": steps})
    assert response.status_code in (400, 422)
    errors = field_errors(response.text)
    assert list(errors) == ["steps"] and message in errors["steps"], errors
    assert 'aria-describedby="steps-error"' in response.text and HOSTILE not in response.text
    assert 'value="steps" id="mode-steps" checked' in response.text  # the form stays as it was sent
    assert workflows_of(services, account) == []


def test_ui_scheduled_workflow_created_and_listed_with_its_next_run(signed_in, services, account):
    response = post(signed_in, "/ui/workflows/new", SCHEDULE_FORM)
    assert response.status_code == 303, field_errors(response.text)
    [workflow] = workflows_of(services, account)
    assert (workflow.trigger_type, workflow.schedule["cron"], workflow.schedule["timezone"]) == (
        "schedule", "30 2 * * *", "Europe/Berlin")
    api = signed_in.get(f"/api/workflows/{workflow.id}", headers=account.headers).get_json()
    listing = signed_in.get("/ui/workflows").text
    assert '<code class="cron">30 2 * * *</code>' in listing and "Europe/Berlin" in listing
    assert f'next run <time datetime="{api["next_run_at"][:19]}Z">' in listing
    assert "webhook-url" not in signed_in.get(response.location).text  # no URL: it runs on its schedule
    form = signed_in.get(f"/ui/workflows/{workflow.id}/edit").text
    assert 'value="30 2 * * *"' in form and 'value="Europe/Berlin"' in form
    post(signed_in, f"/ui/workflows/{workflow.id}/edit", {**SCHEDULE_FORM})  # "enabled" on, unchanged
    post(signed_in, f"/ui/workflows/{workflow.id}/enabled", {"enabled": "false"})
    assert "no next run: disabled" in signed_in.get("/ui/workflows").text


def test_ui_schedule_inputs_are_ignored_for_other_triggers(signed_in, services, account):
    response = post(signed_in, "/ui/workflows/new", {**SCHEDULE_FORM, "trigger_type": "manual",
                                                       "schedule.cron": "not cron at all"})
    assert response.status_code == 303
    assert workflows_of(services, account)[0].schedule is None


@pytest.mark.parametrize("change, field, message", [
    ({"schedule.cron": ""}, "schedule-cron", "schedule.cron must be a cron expression of 5 fields"),
    ({"schedule.cron": "@daily"}, "schedule-cron", "schedule.cron must be a cron expression of 5 fields"),
    ({"schedule.cron": "61 * * * *"}, "schedule-cron", "schedule.cron is not a valid cron expression"),
    ({"schedule.timezone": "Mars/Olympus"}, "schedule-timezone", "schedule.timezone must be an IANA time zone"),
])
def test_ui_schedule_error_is_shown_beside_its_field(signed_in, services, account, change, field, message):
    response = post(signed_in, "/ui/workflows/new", {**SCHEDULE_FORM, **change})
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert list(errors) == [field] and message in errors[field], errors
    assert f'aria-describedby="{field}-error"' in response.text
    assert workflows_of(services, account) == []


def test_ui_schedule_without_a_time_zone_runs_in_utc(signed_in, services, account):
    assert post(signed_in, "/ui/workflows/new", {**SCHEDULE_FORM, "schedule.timezone": " "}).status_code == 303
    assert workflows_of(services, account)[0].schedule["timezone"] == "UTC"

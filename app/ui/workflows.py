"""Workflow pages: list, create, edit, enable/disable, delete (with a confirmation), run now."""
from __future__ import annotations

import json
from datetime import datetime

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import connectors, schedules
from app.errors import ValidationFailed
from app.models import TriggerType, Workflow, utcnow
from app.step_rules import step_json
from app.ui import bp
from app.ui.forms import EXAMPLE_CONFIGS, WorkflowForm, parse_json
from app.ui.pages import principal, services

PAGE_SIZE = 50
TRIGGER_LABELS = {"webhook": "webhook (a URL senders POST to)", "manual": "manual (Run now and the API only)",
                  "schedule": "schedule (cron)"}
EXAMPLE_PAYLOAD = {"id": "ord_1001", "amount": 42, "customer": {"email": "ada@example.com"}}


@bp.get("/ui/workflows")
def workflows() -> str:
    page = services().list_workflows(principal(), limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    last = services().last_executions(principal(), [workflow.id for workflow in page.items])
    return render_template("workflows.html", page=page, last=last, cursor=request.args.get("cursor"),
                           next_runs=_next_runs(page.items))


def _next_runs(workflows: list[Workflow]) -> dict[str, datetime | None]:
    """When each scheduled workflow runs next (None while disabled), as the API's `next_run_at`."""
    now = utcnow()
    return {w.id: schedules.next_run_at(w, now) for w in workflows if w.trigger_type == TriggerType.SCHEDULE.value}


@bp.route("/ui/workflows/new", methods=["GET", "POST"])
def new_workflow() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return _form_page(WorkflowForm.blank(), None)
    form = WorkflowForm.posted(request.form)
    body = form.body(request.form)
    if body is None:
        return _form_page(form, None), 400
    try:
        workflow = services().create_workflow(principal(), body)
    except ValidationFailed as error:
        form.refuse(error)
        return _form_page(form, None), 422
    flash(f"Workflow “{workflow.name}” created.", "info")
    return redirect(url_for("ui.workflow", workflow_id=workflow.id), 303)


@bp.route("/ui/workflows/<workflow_id>/edit", methods=["GET", "POST"])
def edit_workflow(workflow_id: str) -> Response | str | tuple[str, int]:
    workflow = services().get_workflow(principal(), workflow_id)
    if request.method == "GET":
        return _form_page(WorkflowForm.of(workflow), workflow)
    form = WorkflowForm.posted(request.form, has_secret=workflow.secret is not None)
    body = form.body(request.form)
    if body is None:
        return _form_page(form, workflow), 400
    try:
        workflow = services().update_workflow(principal(), workflow_id, body, partial=False)
    except ValidationFailed as error:
        form.refuse(error)
        return _form_page(form, workflow), 422
    flash("Changes saved.", "info")
    return redirect(url_for("ui.workflow", workflow_id=workflow.id), 303)


def _form_page(form: WorkflowForm, workflow: Workflow | None) -> str:
    return render_template("workflow_form.html", form=form, workflow=workflow, trigger_labels=TRIGGER_LABELS,
                           trigger_types=[t.value for t in TriggerType], action_types=connectors.action_types(),
                           examples={name: json.dumps(config, indent=2) for name, config in EXAMPLE_CONFIGS.items()})


@bp.get("/ui/workflows/<workflow_id>")
def workflow(workflow_id: str) -> str:
    return _detail_page(services().get_workflow(principal(), workflow_id), json.dumps(EXAMPLE_PAYLOAD, indent=2))


def _detail_page(workflow: Workflow, payload: str, errors: dict[str, str] | None = None) -> str:
    webhook_url = (url_for("webhooks.receive", workflow_id=workflow.id, _external=True)
                   if workflow.trigger_type == TriggerType.WEBHOOK.value else None)
    last = services().last_executions(principal(), [workflow.id]).get(workflow.id)
    return render_template("workflow.html", workflow=workflow, webhook_url=webhook_url, last=last,
                           next_run=_next_runs([workflow]).get(workflow.id), steps=[step_json(s) for s in workflow.steps],
                           payload=payload, example=json.dumps(EXAMPLE_PAYLOAD), errors=errors or {})


@bp.post("/ui/workflows/<workflow_id>/enabled")
def set_enabled(workflow_id: str) -> Response:
    enabled = request.form.get("enabled") == "true"
    workflow = services().update_workflow(principal(), workflow_id, {"enabled": enabled}, partial=True)
    flash(f"Workflow {'enabled' if workflow.enabled else 'disabled: its webhook URL now answers 404'}.", "info")
    return redirect(url_for("ui.workflow", workflow_id=workflow_id), 303)


@bp.route("/ui/workflows/<workflow_id>/delete", methods=["GET", "POST"])
def delete_workflow(workflow_id: str) -> Response | str:
    workflow = services().get_workflow(principal(), workflow_id)
    if request.method == "GET":
        return render_template("workflow_delete.html", workflow=workflow)
    services().delete_workflow(principal(), workflow_id)
    flash(f"Workflow “{workflow.name}” deleted. Its executions stay listed.", "info")
    return redirect(url_for("ui.workflows"), 303)


@bp.post("/ui/workflows/<workflow_id>/run")
def run_workflow(workflow_id: str) -> Response | tuple[str, int]:
    workflow = services().get_workflow(principal(), workflow_id)
    errors: dict[str, str] = {}
    text = request.form.get("payload", "")
    payload = parse_json(text, "payload", errors, empty={})
    if errors:
        return _detail_page(workflow, text, errors), 400
    execution = services().run_now(principal(), workflow_id, payload)
    flash("Run started.", "info")
    return redirect(url_for("ui.execution", execution_id=execution.id), 303)

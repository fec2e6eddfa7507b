"""Execution pages: the filtered, paged list and one execution, both refreshing themselves while
something runs; cancel and replay as plain forms."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from werkzeug.wrappers import Response

from app import validation
from app.errors import Conflict, NotFound, QueueFull, RateLimited, Unavailable
from app.models import ExecutionStatus
from app.ui import bp
from app.ui.pages import principal, render_page, services

PAGE_SIZE = 50
FILTER_WORKFLOWS = 200  # workflows offered in the filter's list (the API's largest page)
# Refusals a person can act on: shown as a message on the execution's page, not as an error page.
_ACTION_REFUSALS = (Conflict, QueueFull, RateLimited, Unavailable)


@bp.get("/ui/executions")
def executions() -> Response:
    workflow_id = request.args.get("workflow_id") or None
    # The filter form sends "Any status" as an empty value: no filter, unlike the API's 422.
    status = validation.status_arg(request.args.get("status") or None)
    cursor = request.args.get("cursor") or None
    page = services().list_executions(principal(), workflow_id=workflow_id, status=status,
                                      limit=PAGE_SIZE, cursor=cursor)
    workflows = services().list_workflows(principal(), limit=FILTER_WORKFLOWS, cursor=None).items
    filters = {key: value for key, value in (("workflow_id", workflow_id), ("status", status and status.value))
               if value}
    return render_page("executions.html", "_executions.html", page=page, cursor=cursor, filters=filters,
                       statuses=[s.value for s in ExecutionStatus], workflows=workflows,
                       names={workflow.id: workflow.name for workflow in workflows},
                       # Only the first page polls: new executions appear at its top.
                       live=cursor is None)


@bp.get("/ui/executions/<execution_id>")
def execution(execution_id: str) -> Response:
    found = services().get_execution(principal(), execution_id)
    try:
        workflow = services().get_workflow(principal(), found.workflow_id)
    except NotFound:
        workflow = None  # deleted since: its executions stay readable
    steps = services().steps_of(principal().tenant_id, [found])[found.id]
    return render_page("execution.html", "_execution.html", execution=found, workflow=workflow, steps=steps)


@bp.post("/ui/executions/<execution_id>/cancel")
def cancel(execution_id: str) -> Response:
    try:
        services().cancel(principal(), execution_id, by=f"dashboard:{principal().user_id}")
        flash("Cancel requested: a running action stops within 2 seconds.", "info")
    except _ACTION_REFUSALS as error:
        flash(error.message, "error")
    return redirect(url_for("ui.execution", execution_id=execution_id), 303)


@bp.post("/ui/executions/<execution_id>/replay")
def replay(execution_id: str) -> Response:
    try:
        replayed = services().replay(principal(), execution_id)
    except _ACTION_REFUSALS as error:
        flash(error.message, "error")
        return redirect(url_for("ui.execution", execution_id=execution_id), 303)
    flash(f"Replay of {execution_id} started.", "info")
    return redirect(url_for("ui.execution", execution_id=replayed.id), 303)

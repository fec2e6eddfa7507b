"""Executions: list, inspect, cancel, replay, scoped to the caller's tenant."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app import validation
from app.api.auth import principal, protect, services
from app.api.serialize import execution_json, page_json
from app.errors import ValidationFailed

bp = Blueprint("executions", __name__, url_prefix="/api/executions")
protect(bp)


@bp.get("")
def index():
    limit, cursor = validation.page_args(request.args)
    status = validation.status_arg(validation.query_arg(request.args, "status"))
    page = services().list_executions(principal(), workflow_id=validation.query_arg(request.args, "workflow_id"),
                                      status=status, limit=limit, cursor=cursor)
    steps = services().steps_of(principal().tenant_id, page.items)
    return jsonify(page_json(page, lambda execution: execution_json(execution, steps[execution.id])))


def _with_steps(execution):
    return execution_json(execution, services().steps_of(execution.tenant_id, [execution])[execution.id])


@bp.get("/<execution_id>")
def show(execution_id: str):
    return jsonify(_with_steps(services().get_execution(principal(), execution_id)))


@bp.post("/<execution_id>/cancel")
def cancel(execution_id: str):
    return jsonify(_with_steps(services().cancel(principal(), execution_id))), 202


@bp.post("/<execution_id>/replay")
def replay(execution_id: str):
    start = request.args.get("from")
    if start not in (None, "failed"):
        raise ValidationFailed(f"from must be 'failed' (or left out to run every step), got {start!r}", field="from")
    execution = services().replay(principal(), execution_id, from_failed=start == "failed")
    return jsonify({"execution_id": execution.id}), 202

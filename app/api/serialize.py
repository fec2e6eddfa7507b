"""The JSON shapes of API.md; `secret` is write-only and never leaves through here."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from flask import url_for

from app import schedules
from app.models import Credential, Execution, Page, StepRecord, Workflow, isoformat, utcnow
from app.step_rules import step_json

T = TypeVar("T")


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    one = len(workflow.steps) == 1  # the wave-1 shape: the one step's action also at the top level
    body = {
        "id": workflow.id,
        "name": workflow.name,
        "trigger_type": workflow.trigger_type,
        "action_type": workflow.action_type if one else None,
        "config": workflow.config if one else None,
        "steps": [step_json(step) for step in workflow.steps],
        "enabled": workflow.enabled,
        "has_secret": workflow.secret is not None,
        "signature_scheme": workflow.signature_scheme,
        "created_at": isoformat(workflow.created_at),
        "updated_at": isoformat(workflow.updated_at),
    }
    if workflow.trigger_type == "webhook":
        body["webhook_url"] = url_for("webhooks.receive", workflow_id=workflow.id, _external=True)
    if workflow.schedule is not None:
        body["schedule"] = schedules.public(workflow.schedule)
        body["next_run_at"] = isoformat(schedules.next_run_at(workflow, utcnow()))
    return body


def credential_json(credential: Credential) -> dict[str, Any]:
    """A credential as the API shows it: never its data."""
    return {"id": credential.id, "name": credential.name, "type": credential.type,
            "created_at": isoformat(credential.created_at), "updated_at": isoformat(credential.updated_at)}


def step_record_json(record: StepRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "status": record.status.value,
        "attempts": record.attempts,
        "started_at": isoformat(record.started_at),
        "finished_at": isoformat(record.finished_at),
        "duration_ms": record.duration_ms,
        "result": record.result,
        "error": record.error,
    }


def execution_json(execution: Execution, steps: list[StepRecord]) -> dict[str, Any]:
    return {
        "id": execution.id,
        "workflow_id": execution.workflow_id,
        "status": execution.status.value,
        "trigger": execution.trigger,
        "attempts": execution.attempts,
        "created_at": isoformat(execution.created_at),
        "started_at": isoformat(execution.started_at),
        "finished_at": isoformat(execution.finished_at),
        "duration_ms": execution.duration_ms,
        "error": execution.error,
        "cancelled_by": execution.cancelled_by,
        "replay_of": execution.replay_of,
        "result": execution.result,
        "payload": execution.payload,
        "headers": execution.headers,
        "query": execution.query,
        "steps": [step_record_json(record) for record in steps],
    }


def page_json(page: Page[T], render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {"items": [render(item) for item in page.items], "next_cursor": page.next_cursor}

"""How values and rows of the SQLite store map to Python: timestamps, JSON, dataclasses."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from typing import Any

from app.models import ApiKey, Credential, Execution, ExecutionStatus, StepRecord, StepStatus, Tenant, User, Workflow
from app.store._rules import steps_document, steps_from_document
from app.store.base import WorkerRecord


# --- values ----------------------------------------------------------------------------------------
def to_ts(value: datetime | None) -> str | None:
    """Encode a timestamp as fixed-width ISO-8601 UTC text, which sorts chronologically."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {value!r}")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def from_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def to_json(value: Any) -> str:
    # ASCII escapes keep lone surrogates from untrusted payloads storable (UTF-8 cannot encode them).
    return json.dumps(value)


def from_json(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


# --- rows ------------------------------------------------------------------------------------------
def tenant_from(row: sqlite3.Row) -> Tenant:
    return Tenant(id=row["id"], name=row["name"], created_at=from_ts(row["created_at"]))


def user_from(row: sqlite3.Row) -> User:
    return User(id=row["id"], tenant_id=row["tenant_id"], email=row["email"], created_at=from_ts(row["created_at"]))


def api_key_from(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        created_at=from_ts(row["created_at"]),
        revoked_at=from_ts(row["revoked_at"]),
    )


def steps_to_json(workflow: Workflow) -> str | None:
    """The steps column: NULL for the wave-1 form, whose action_type and config columns say it all."""
    document = steps_document(workflow)
    return None if document is None else to_json(document)


def workflow_from(row: sqlite3.Row) -> Workflow:
    return Workflow(
        id=row["id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        name=row["name"],
        trigger_type=row["trigger_type"],
        action_type=row["action_type"],
        config=from_json(row["config"]),
        enabled=bool(row["enabled"]),
        created_at=from_ts(row["created_at"]),
        updated_at=from_ts(row["updated_at"]),
        secret=row["secret"],
        schedule=from_json(row["schedule"]),
        signature_scheme=row["signature_scheme"],
        steps=steps_from_document(from_json(row["steps"])),
    )


def credential_from(row: sqlite3.Row) -> Credential:
    return Credential(id=row["id"], tenant_id=row["tenant_id"], name=row["name"], type=row["type"],
                      encrypted_data=row["encrypted_data"], created_at=from_ts(row["created_at"]),
                      updated_at=from_ts(row["updated_at"]))


def execution_from(row: sqlite3.Row) -> Execution:
    return Execution(
        id=row["id"],
        tenant_id=row["tenant_id"],
        workflow_id=row["workflow_id"],
        status=ExecutionStatus(row["status"]),
        trigger=row["trigger"],
        payload=from_json(row["payload"]),
        created_at=from_ts(row["created_at"]),
        headers=from_json(row["headers"]),
        query=from_json(row["query"]),
        attempts=row["attempts"],
        result=from_json(row["result"]),
        error=row["error"],
        cancelled_by=row["cancelled_by"],
        owner=row["owner"],
        started_at=from_ts(row["started_at"]),
        finished_at=from_ts(row["finished_at"]),
        replay_of=row["replay_of"],
        trace_context=row["trace_context"],
    )


def execution_values(e: Execution) -> tuple[Any, ...]:
    """The values of an execution in the column order of INSERT_EXECUTION."""
    return (
        e.id, e.tenant_id, e.workflow_id, ExecutionStatus(e.status).value, e.trigger, to_json(e.payload),
        to_json(e.headers), to_json(e.query), e.attempts, None if e.result is None else to_json(e.result),
        e.error, e.cancelled_by, e.owner, to_ts(e.created_at), to_ts(e.started_at), to_ts(e.finished_at),
        e.replay_of, e.trace_context,
    )


INSERT_EXECUTION = """
    INSERT INTO executions (id, tenant_id, workflow_id, status, "trigger", payload, headers, query, attempts,
                            result, error, cancelled_by, owner, created_at, started_at, finished_at, replay_of,
                            trace_context)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def step_from(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        name=row["name"],
        position=row["position"],
        status=StepStatus(row["status"]),
        attempts=row["attempts"],
        started_at=from_ts(row["started_at"]),
        finished_at=from_ts(row["finished_at"]),
        result=from_json(row["result"]),
        error=row["error"],
        output=from_json(row["output"]),
    )


def step_values(execution_id: str, r: StepRecord) -> tuple[Any, ...]:
    """The values of a step record in the column order of UPSERT_STEP."""
    return (
        execution_id, r.name, r.position, StepStatus(r.status).value, r.attempts, to_ts(r.started_at),
        to_ts(r.finished_at), None if r.result is None else to_json(r.result), r.error,
        None if r.output is None else to_json(r.output),
    )


UPSERT_STEP = """
    INSERT INTO execution_steps (execution_id, name, position, status, attempts, started_at, finished_at, result,
                                 error, output)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (execution_id, name) DO UPDATE SET
        position = excluded.position, status = excluded.status, attempts = excluded.attempts,
        started_at = excluded.started_at, finished_at = excluded.finished_at, result = excluded.result,
        error = excluded.error, output = excluded.output"""


def worker_from(row: sqlite3.Row) -> WorkerRecord:
    return WorkerRecord(id=row["id"], host=row["host"], pid=row["pid"], heartbeat_at=from_ts(row["heartbeat_at"]))

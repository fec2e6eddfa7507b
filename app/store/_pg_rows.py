"""How values and rows of the PostgreSQL store map to Python: timestamps, JSON, dataclasses.

psycopg already gives timestamptz columns as aware datetimes (UTC: the session's time zone) and json
columns decoded, and the columns are named after the dataclass fields, so a row maps field by field."""
from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from app.models import ApiKey, Credential, Execution, ExecutionStatus, StepRecord, StepStatus, Tenant, User, Workflow
from app.store._rules import steps_document, steps_from_document
from app.store.base import WorkerRecord

T = TypeVar("T")
Row = dict[str, Any]


def ts(value: datetime | None) -> datetime | None:
    """Refuse a naive timestamp (PostgreSQL would read it in the session's zone without a word)."""
    if value is not None and value.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {value!r}")
    return value


def to_json(value: Any) -> str:
    """Encode a JSON field for a `%s::json` parameter; ASCII escapes keep lone surrogates storable."""
    return json.dumps(value)


def optional_json(value: Any) -> str | None:
    """Encode a JSON field where None means no value at all (SQL NULL), not JSON null."""
    return None if value is None else json.dumps(value)


def text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: an action's error message may carry one, so it becomes U+FFFD."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _record(cls: type[T], row: Row) -> T:
    return cls(**{field.name: row[field.name] for field in fields(cls)})  # type: ignore[arg-type]


def tenant_from(row: Row) -> Tenant:
    return _record(Tenant, row)


def user_from(row: Row) -> User:
    return _record(User, row)


def api_key_from(row: Row) -> ApiKey:
    return _record(ApiKey, row)


def steps_json(workflow: Workflow) -> str | None:
    """The steps column (a `%s::json` parameter): NULL for the wave-1 form, whose action_type and config
    columns say it all."""
    return optional_json(steps_document(workflow))


def workflow_from(row: Row) -> Workflow:
    return _record(Workflow, {**row, "steps": steps_from_document(row["steps"])})


def credential_from(row: Row) -> Credential:
    return _record(Credential, row)


def execution_from(row: Row) -> Execution:
    return _record(Execution, {**row, "status": ExecutionStatus(row["status"])})


def worker_from(row: Row) -> WorkerRecord:
    return _record(WorkerRecord, row)


def execution_values(e: Execution) -> dict[str, Any]:
    """The parameters of INSERT_EXECUTION, JSON encoded (and checked) before any connection is taken."""
    return {
        "id": e.id, "tenant_id": e.tenant_id, "workflow_id": e.workflow_id,
        "status": ExecutionStatus(e.status).value, "trigger": e.trigger, "payload": to_json(e.payload),
        "headers": to_json(e.headers), "query": to_json(e.query), "attempts": e.attempts,
        "result": optional_json(e.result), "error": text(e.error), "cancelled_by": e.cancelled_by, "owner": e.owner,
        "created_at": ts(e.created_at), "started_at": ts(e.started_at), "finished_at": ts(e.finished_at),
        "replay_of": e.replay_of, "trace_context": e.trace_context,
    }


INSERT_EXECUTION = """
    INSERT INTO executions (id, tenant_id, workflow_id, status, "trigger", payload, headers, query, attempts,
                            result, error, cancelled_by, owner, created_at, started_at, finished_at, replay_of,
                            trace_context)
    VALUES (%(id)s, %(tenant_id)s, %(workflow_id)s, %(status)s, %(trigger)s, %(payload)s::json,
            %(headers)s::json, %(query)s::json, %(attempts)s, %(result)s::json, %(error)s, %(cancelled_by)s,
            %(owner)s, %(created_at)s, %(started_at)s, %(finished_at)s, %(replay_of)s, %(trace_context)s)"""


def step_from(row: Row) -> StepRecord:
    return _record(StepRecord, {**row, "status": StepStatus(row["status"])})


def step_values(execution_id: str, r: StepRecord) -> dict[str, Any]:
    """The parameters of UPSERT_STEP and RECORD_STEP, JSON encoded before any connection is taken."""
    return {
        "execution_id": execution_id, "name": r.name, "position": r.position, "status": StepStatus(r.status).value,
        "attempts": r.attempts, "started_at": ts(r.started_at), "finished_at": ts(r.finished_at),
        "result": optional_json(r.result), "error": text(r.error), "output": optional_json(r.output),
    }


_STEP_COLUMNS = "execution_id, name, position, status, attempts, started_at, finished_at, result, error, output"
_STEP_VALUES = """%(name)s, %(position)s, %(status)s, %(attempts)s, %(started_at)s, %(finished_at)s,
                  %(result)s::json, %(error)s, %(output)s::json"""
_REPLACE_STEP = """
    ON CONFLICT (execution_id, name) DO UPDATE SET
        position = excluded.position, status = excluded.status, attempts = excluded.attempts,
        started_at = excluded.started_at, finished_at = excluded.finished_at, result = excluded.result,
        error = excluded.error, output = excluded.output"""

# Insert or replace a step record by name (with its execution, or in the transaction that finishes it).
UPSERT_STEP = f"INSERT INTO execution_steps ({_STEP_COLUMNS}) VALUES (%(execution_id)s, {_STEP_VALUES}) {_REPLACE_STEP}"

# The same, only while the execution runs under %(owner)s. FOR SHARE makes a finish (or release) of the
# execution racing this checkpoint wait for it, or, if the finish came first, leaves no row to insert from:
# READ COMMITTED re-reads a row locked by a transaction that then committed before testing the WHERE.
RECORD_STEP = f"""
    WITH owned AS (SELECT id FROM executions
                   WHERE id = %(execution_id)s AND owner = %(owner)s AND status = 'running' FOR SHARE)
    INSERT INTO execution_steps ({_STEP_COLUMNS}) SELECT owned.id, {_STEP_VALUES} FROM owned {_REPLACE_STEP}
    RETURNING name"""

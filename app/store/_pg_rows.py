"""How values and rows of the PostgreSQL store map to Python: timestamps, JSON, dataclasses.

psycopg already gives timestamptz columns as aware datetimes (UTC: the session's time zone) and json
columns decoded, and the columns are named after the dataclass fields, so a row maps field by field."""
from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from app.models import ApiKey, Credential, Execution, ExecutionStatus, Tenant, User, Workflow
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


def workflow_from(row: Row) -> Workflow:
    return _record(Workflow, row)


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
        "replay_of": e.replay_of,
    }


INSERT_EXECUTION = """
    INSERT INTO executions (id, tenant_id, workflow_id, status, "trigger", payload, headers, query, attempts,
                            result, error, cancelled_by, owner, created_at, started_at, finished_at, replay_of)
    VALUES (%(id)s, %(tenant_id)s, %(workflow_id)s, %(status)s, %(trigger)s, %(payload)s::json,
            %(headers)s::json, %(query)s::json, %(attempts)s, %(result)s::json, %(error)s, %(cancelled_by)s,
            %(owner)s, %(created_at)s, %(started_at)s, %(finished_at)s, %(replay_of)s)"""

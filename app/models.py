"""Domain records. Rows leave every store as these dataclasses, never as driver rows."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def new_id(prefix: str, now: datetime | None = None) -> str:
    """Return a random id that sorts by creation time (millisecond prefix, 64 random bits)."""
    ms = int((now.timestamp() if now else time.time()) * 1000)
    return f"{prefix}_{ms:012x}{secrets.token_hex(8)}"


def isoformat(value: datetime | None) -> str | None:
    """Render a timestamp as RFC 3339 UTC with a Z suffix, as the API shows it."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExecutionStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


class TriggerType(str, Enum):
    WEBHOOK = "webhook"
    MANUAL = "manual"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: str
    tenant_id: str
    email: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    tenant_id: str
    prefix: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request acts for."""

    tenant_id: str
    user_id: str
    key_prefix: str


@dataclass(frozen=True)
class Workflow:
    id: str
    tenant_id: str
    user_id: str
    name: str
    trigger_type: str
    action_type: str
    config: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secret: str | None = None  # as stored: a Fernet token (security/crypto.py), never the plaintext
    signature_scheme: str = "auto"  # auto | standard | github | stripe | slack | shopify
    schedule: dict[str, str] | None = None  # {"cron", "timezone"} when trigger_type is "schedule"
    credential_id: str | None = None  # the credential the action uses (a one-step workflow)


@dataclass(frozen=True)
class Credential:
    """A tenant's secret for connectors; `encrypted_data` is the Fernet token of its JSON `data`."""

    id: str
    tenant_id: str
    name: str
    type: str
    encrypted_data: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Execution:
    id: str
    tenant_id: str
    workflow_id: str
    status: ExecutionStatus
    trigger: str
    payload: Any
    created_at: datetime
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)  # a repeated key holds a list
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled_by: str | None = None
    owner: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    replay_of: str | None = None
    # W3C traceparent of the span that accepted it (app/tracing.py): every run of it, recovered and
    # redelivered ones too, continues that trace. None when tracing was off.
    trace_context: str | None = None

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

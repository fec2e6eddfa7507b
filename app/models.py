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


def duration_ms(started_at: datetime | None, finished_at: datetime | None) -> int | None:
    """Milliseconds from start to finish, None until both are known."""
    if started_at is None or finished_at is None:
        return None
    return int((finished_at - started_at).total_seconds() * 1000)


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


MAIN_STEP = "main"  # the name of the one step of a workflow written with action_type + config


@dataclass(frozen=True)
class Step:
    """One action of a workflow; `condition` is a Jinja2 expression, `credential_id` names a credential."""

    name: str
    action_type: str
    config: dict[str, Any]
    condition: str | None = None
    credential_id: str | None = None

    @property
    def plain(self) -> bool:
        """Whether this is the wave-1 form: the step `main`, no condition, no credential."""
        return self.name == MAIN_STEP and self.condition is None and self.credential_id is None


@dataclass(frozen=True)
class Workflow:
    """A trigger and its steps, run in order.

    `steps` is the definition. A workflow given no steps, or just a plain step `main`, is the wave-1 form:
    its one step is made from `action_type` + `config`, which win over an older `main` (so `replace(w,
    config=...)` edits it). Otherwise `action_type` and `config` mirror the first step (stores keep them
    in their NOT NULL columns), whatever was passed."""

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
    steps: tuple[Step, ...] = ()
    schedule: dict[str, str] | None = None  # {"cron", "timezone", "active_from"} for schedule triggers

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not steps or (len(steps) == 1 and steps[0].plain):
            steps = (Step(MAIN_STEP, self.action_type, self.config),)
        else:
            object.__setattr__(self, "action_type", steps[0].action_type)
            object.__setattr__(self, "config", steps[0].config)
        object.__setattr__(self, "steps", steps)

    @property
    def plain(self) -> bool:
        """Whether the workflow is one plain step `main` (stores keep it as action_type + config alone)."""
        return len(self.steps) == 1 and self.steps[0].plain


class StepStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def settled(self) -> bool:
        """Done for good in its execution: a resumed or replayed run does not run it again."""
        return self in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


@dataclass(frozen=True)
class StepRecord:
    """What one step of an execution did. `result` is shown (secrets redacted, body cut); `output` is what
    templates of later steps see as `steps.<name>` (kept as received, never shown)."""

    name: str
    position: int  # index of the step in the workflow when it was recorded
    status: StepStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    output: dict[str, Any] | None = None

    @property
    def duration_ms(self) -> int | None:
        return duration_ms(self.started_at, self.finished_at)


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
        return duration_ms(self.started_at, self.finished_at)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

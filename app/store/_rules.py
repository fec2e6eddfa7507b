"""Rules that every store backend applies the same way: pages, statuses, idempotency, token buckets."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from app.models import ExecutionStatus, Page, Step, Workflow

ACTIVE = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
TERMINAL = tuple(status for status in ExecutionStatus if status.terminal)
WORKFLOW_DELETED = "workflow deleted"


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


def check_limit(limit: int) -> None:
    """Reject a page size below one."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")


def make_page(items: list[R], limit: int) -> Page[R]:
    """Cut a page from items sorted newest first; pass more than `limit` items when more exist."""
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    return Page(items=items[:limit], next_cursor=items[limit - 1].id)


def email_key(email: str) -> str:
    """Return the form under which emails are unique (case-insensitive, Unicode-aware)."""
    return email.casefold()


def steps_document(workflow: Workflow) -> list[dict[str, Any]] | None:
    """The stored form of a workflow's steps (a JSON list); None for the wave-1 form, whose action_type
    and config columns say it all."""
    if workflow.plain:
        return None
    return [{"name": s.name, "action_type": s.action_type, "config": s.config, "condition": s.condition,
             "credential_id": s.credential_id} for s in workflow.steps]


def steps_from_document(document: list[dict[str, Any]] | None) -> tuple[Step, ...]:
    """The steps of a stored workflow from steps_document's form (None: none, the wave-1 form)."""
    return tuple(Step(**step) for step in document) if document is not None else ()


def terminal_status(status: ExecutionStatus | str) -> ExecutionStatus:
    """Return `status` as an ExecutionStatus, refusing queued and running."""
    status = ExecutionStatus(status)
    if not status.terminal:
        raise ValueError(f"an execution can only finish in a terminal status, got {status.value!r}")
    return status


def idempotency_cutoff(created_at: datetime, ttl: float) -> datetime:
    """Return the instant at or before which an earlier use of a key no longer counts."""
    return created_at - timedelta(seconds=ttl)


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_at: datetime


def take_from_bucket(bucket: Bucket | None, *, want: int, rate: float, burst: float,
                     now: datetime) -> tuple[Bucket, int, float]:
    """Refill `bucket` (None: a new, full one) up to `now` and take up to `want` whole tokens; return
    the new state, how many were taken and, if none, the seconds until one is there."""
    if rate <= 0 or burst < 1 or want < 1:
        raise ValueError(f"a token bucket needs rate > 0, burst >= 1 and want >= 1, "
                         f"got rate={rate!r} burst={burst!r} want={want!r}")
    if bucket is None:
        tokens, updated_at = float(burst), now
    else:
        # Clocks of different processes may disagree slightly: never refill for negative time.
        elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
        tokens, updated_at = min(float(burst), bucket.tokens + elapsed * rate), max(bucket.updated_at, now)
    taken = min(want, int(tokens))
    if taken:
        return Bucket(tokens - taken, updated_at), taken, 0.0
    return Bucket(tokens, updated_at), 0, (1 - tokens) / rate

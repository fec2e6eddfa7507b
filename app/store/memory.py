"""A thread-safe in-memory store: a real backend for tests and single-process runs, not a double."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from app.models import ApiKey, Credential, Execution, ExecutionStatus, Page, StepRecord, Tenant, User, Workflow
from app.store._rules import (
    ACTIVE,
    WORKFLOW_DELETED,
    Bucket,
    check_limit,
    email_key,
    idempotency_cutoff,
    make_page,
    take_from_bucket,
    terminal_status,
)
from app.store._memory_credentials import MemoryCredentialsMixin
from app.store.base import DuplicateError, Store, WorkerRecord

QUEUED, RUNNING, CANCELLED = ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED


def _json_copy(value: Any) -> Any:
    """Copy a JSON value the way a database round trip would (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _detached_workflow(workflow: Workflow) -> Workflow:
    steps = tuple(replace(step, config=_json_copy(step.config)) for step in workflow.steps)
    return replace(workflow, config=_json_copy(workflow.config), steps=steps)


def _detached_step(record: StepRecord) -> StepRecord:
    return replace(record, result=_json_copy(record.result), output=_json_copy(record.output))


def _detached_execution(execution: Execution) -> Execution:
    return replace(
        execution,
        status=ExecutionStatus(execution.status),
        payload=_json_copy(execution.payload),
        headers=_json_copy(execution.headers),
        query=_json_copy(execution.query),
        result=_json_copy(execution.result),
    )


def _cancelled(execution: Execution, by: str, now: datetime) -> Execution:
    """Apply a cancel request: queued with no owner ends at once; running, or queued under an owner
    (which may be starting it without a claim), is flagged for that owner."""
    by = execution.cancelled_by or by
    if execution.status is QUEUED and execution.owner is None:
        return replace(execution, status=CANCELLED, finished_at=now, cancelled_by=by)
    if execution.status in ACTIVE:
        return replace(execution, cancelled_by=by)
    return execution


def _newest_first(items: Iterable[Any], cursor: str | None) -> list[Any]:
    return sorted((item for item in items if cursor is None or item.id < cursor), key=lambda i: i.id, reverse=True)


def _require(table: dict[str, Any], key: str, what: str) -> None:
    """Refuse a reference to a missing record, as a foreign key would."""
    if key not in table:
        raise ValueError(f"unknown {what} {key!r}")


def _require_new(table: dict[str, Any], key: str, what: str) -> None:
    """Refuse a taken unique value, as a unique constraint would."""
    if key in table:
        raise DuplicateError(f"{what} {key!r} already exists")


class MemoryStore(MemoryCredentialsMixin, Store):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        self._users: dict[str, User] = {}
        self._user_by_email: dict[str, str] = {}
        self._keys: dict[str, ApiKey] = {}
        self._workflows: dict[str, Workflow] = {}
        self._deleted_workflows: set[str] = set()
        self._executions: dict[str, Execution] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}  # execution id -> step name -> record
        self._idempotency: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._buckets: dict[str, Bucket] = {}
        self._credentials: dict[str, Credential] = {}
        self._slots: dict[str, datetime] = {}  # workflow id -> newest schedule slot claimed

    # --- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        """Nothing to create: the dicts are the schema."""

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""

    # --- tenants, users, API keys ------------------------------------------------------------------
    def ensure_tenant(self, name: str, *, tenant_id: str, now: datetime) -> Tenant:
        with self._lock:
            for tenant in self._tenants.values():
                if tenant.name == name:
                    return tenant
            _require_new(self._tenants, tenant_id, "tenant id")
            tenant = self._tenants[tenant_id] = Tenant(id=tenant_id, name=name, created_at=now)
            return tenant

    def create_user(self, user: User) -> User:
        with self._lock:
            _require(self._tenants, user.tenant_id, "tenant")
            _require_new(self._users, user.id, "user id")
            _require_new(self._user_by_email, email_key(user.email), "email")
            self._users[user.id] = user
            self._user_by_email[email_key(user.email)] = user.id
            return user

    def get_user_by_email(self, email: str) -> User | None:
        with self._lock:
            user_id = self._user_by_email.get(email_key(email))
            return self._users[user_id] if user_id else None

    def add_api_key(self, key: ApiKey) -> ApiKey:
        with self._lock:
            _require(self._tenants, key.tenant_id, "tenant")
            _require(self._users, key.user_id, "user")
            _require_new(self._keys, key.prefix, "key prefix")
            if any(existing.id == key.id for existing in self._keys.values()):
                raise DuplicateError(f"key id {key.id!r} already exists")
            self._keys[key.prefix] = key
            return key

    def get_api_key(self, prefix: str) -> ApiKey | None:
        with self._lock:
            return self._keys.get(prefix)

    def revoke_api_key(self, prefix: str, *, now: datetime) -> bool:
        with self._lock:
            key = self._keys.get(prefix)
            if key is None or key.revoked_at is not None:
                return False
            self._keys[prefix] = replace(key, revoked_at=now)
            return True

    # --- workflows ---------------------------------------------------------------------------------
    def _live_workflow(self, tenant_id: str | None, workflow_id: str) -> Workflow | None:
        workflow = self._workflows.get(workflow_id)
        if workflow is None or workflow_id in self._deleted_workflows:
            return None
        return workflow if tenant_id is None or workflow.tenant_id == tenant_id else None

    def create_workflow(self, workflow: Workflow) -> Workflow:
        with self._lock:
            _require(self._tenants, workflow.tenant_id, "tenant")
            _require(self._users, workflow.user_id, "user")
            _require_new(self._workflows, workflow.id, "workflow id")
            self._workflows[workflow.id] = _detached_workflow(workflow)
            return _detached_workflow(workflow)

    def get_workflow(self, tenant_id: str | None, workflow_id: str) -> Workflow | None:
        with self._lock:
            workflow = self._live_workflow(tenant_id, workflow_id)
            return _detached_workflow(workflow) if workflow else None

    def list_workflows(self, tenant_id: str | None, *, limit: int, cursor: str | None = None) -> Page[Workflow]:
        check_limit(limit)
        with self._lock:
            live = (w for w in self._workflows.values() if self._live_workflow(tenant_id, w.id))
            page = make_page(_newest_first(live, cursor), limit)
            return Page([_detached_workflow(w) for w in page.items], page.next_cursor)

    def update_workflow(self, workflow: Workflow) -> Workflow | None:
        with self._lock:
            existing = self._live_workflow(workflow.tenant_id, workflow.id)
            if existing is None:
                return None
            updated = replace(
                existing,
                name=workflow.name,
                trigger_type=workflow.trigger_type,
                action_type=workflow.action_type,
                config=_json_copy(workflow.config),
                steps=_detached_workflow(workflow).steps,
                enabled=workflow.enabled,
                secret=workflow.secret,
                signature_scheme=workflow.signature_scheme,
                updated_at=workflow.updated_at,
                schedule=_json_copy(workflow.schedule),
            )
            self._workflows[workflow.id] = updated
            return _detached_workflow(updated)

    def delete_workflow(self, tenant_id: str, workflow_id: str, *, now: datetime) -> bool:
        with self._lock:
            if self._live_workflow(tenant_id, workflow_id) is None:
                return False
            self._deleted_workflows.add(workflow_id)
            for execution in list(self._executions.values()):
                if execution.workflow_id == workflow_id and execution.status in ACTIVE:
                    self._executions[execution.id] = _cancelled(execution, WORKFLOW_DELETED, now)
            return True

    # --- executions --------------------------------------------------------------------------------
    def create_execution(
        self, execution: Execution, *, idempotency_key: str | None = None, idempotency_ttl: float = 86400.0,
        steps: Sequence[StepRecord] = (),
    ) -> tuple[Execution, bool]:
        with self._lock:
            _require(self._tenants, execution.tenant_id, "tenant")
            _require(self._workflows, execution.workflow_id, "workflow")
            scope = None if idempotency_key is None else (execution.workflow_id, idempotency_key)
            first = self._idempotency.get(scope) if scope else None
            if first and first[1] > idempotency_cutoff(execution.created_at, idempotency_ttl):
                return _detached_execution(self._executions[first[0]]), False
            _require_new(self._executions, execution.id, "execution id")
            stored = _detached_execution(execution)  # before any change: it raises on a non-JSON payload
            records = [_detached_step(record) for record in steps]
            if scope:
                self._idempotency[scope] = (execution.id, execution.created_at)
            self._put_steps(execution.id, records)
            return self._save(stored), True

    def find_by_idempotency_key(self, workflow_id: str, key: str, *, since: datetime) -> Execution | None:
        with self._lock:
            first = self._idempotency.get((workflow_id, key))
            if first is None or first[1] <= since:
                return None
            return _detached_execution(self._executions[first[0]])

    def _execution(self, tenant_id: str | None, execution_id: str) -> Execution | None:
        execution = self._executions.get(execution_id)
        if execution is None or (tenant_id is not None and execution.tenant_id != tenant_id):
            return None
        return execution

    def _save(self, execution: Execution) -> Execution:
        self._executions[execution.id] = execution
        return _detached_execution(execution)

    def get_execution(self, tenant_id: str | None, execution_id: str) -> Execution | None:
        with self._lock:
            execution = self._execution(tenant_id, execution_id)
            return _detached_execution(execution) if execution else None

    def list_executions(
        self,
        tenant_id: str | None,
        *,
        workflow_id: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Execution]:
        check_limit(limit)
        with self._lock:
            matching = (
                e
                for e in self._executions.values()
                if (tenant_id is None or e.tenant_id == tenant_id)
                and (workflow_id is None or e.workflow_id == workflow_id)
                and (status is None or e.status == status)
            )
            page = make_page(_newest_first(matching, cursor), limit)
            return Page([_detached_execution(e) for e in page.items], page.next_cursor)

    def claim_execution(self, execution_id: str, *, owner: str, now: datetime) -> Execution | None:
        with self._lock:
            execution = self._executions.get(execution_id)
            if execution is None or execution.status is not QUEUED or execution.owner not in (None, owner):
                return None
            if execution.cancelled_by:
                # Cancelled while it ran in a process that then died: finish it instead of running it again.
                self._executions[execution_id] = replace(execution, status=CANCELLED, owner=owner, finished_at=now)
                return None
            return self._save(replace(execution, status=RUNNING, owner=owner, started_at=now))

    def finish_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        status: ExecutionStatus,
        attempts: int,
        now: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        cancelled_by: str | None = None,
        steps: Sequence[StepRecord] = (),
        started_at: datetime | None = None,
    ) -> bool:
        status = terminal_status(status)
        records = [_detached_step(record) for record in steps]
        with self._lock:
            if not self._runs_under(execution_id, owner, ACTIVE):
                return False
            execution = self._executions[execution_id]
            self._put_steps(execution_id, records)
            self._executions[execution_id] = replace(
                execution,
                status=status,
                attempts=attempts,
                finished_at=now,
                result=_json_copy(result),
                error=error,
                cancelled_by=cancelled_by if cancelled_by is not None else execution.cancelled_by,
                started_at=execution.started_at or started_at,
            )
            return True

    def _runs_under(self, execution_id: str, owner: str, statuses: tuple[ExecutionStatus, ...] = (RUNNING,)) -> bool:
        execution = self._executions.get(execution_id)
        return execution is not None and execution.status in statuses and execution.owner == owner

    def _put_steps(self, execution_id: str, records: list[StepRecord]) -> None:
        mine = self._steps.setdefault(execution_id, {})
        for record in records:
            mine[record.name] = record

    def record_step(self, execution_id: str, *, owner: str, step: StepRecord) -> bool:
        record = _detached_step(step)
        with self._lock:
            if not self._runs_under(execution_id, owner):
                return False
            self._put_steps(execution_id, [record])
            return True

    def list_steps(self, tenant_id: str | None, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        with self._lock:
            return {
                execution_id: sorted((_detached_step(r) for r in self._steps.get(execution_id, {}).values()),
                                     key=lambda r: (r.position, r.name))
                if self._execution(tenant_id, execution_id) else []
                for execution_id in execution_ids
            }

    def request_cancel(self, tenant_id: str, execution_id: str, *, by: str, now: datetime) -> Execution | None:
        with self._lock:
            execution = self._execution(tenant_id, execution_id)
            return self._save(_cancelled(execution, by, now)) if execution else None

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(
                (e.id, e.cancelled_by)
                for e in self._executions.values()
                if e.owner == owner and e.status in ACTIVE and e.cancelled_by is not None
            )

    def mark_running(self, owner: str, started: Mapping[str, datetime]) -> int:
        with self._lock:
            marked = [execution_id for execution_id in started if self._runs_under(execution_id, owner, (QUEUED,))]
            for execution_id in marked:
                self._executions[execution_id] = replace(self._executions[execution_id], status=RUNNING,
                                                         started_at=started[execution_id])
            return len(marked)

    def release_executions(self, owner: str) -> int:
        with self._lock:
            mine = [e for e in self._executions.values() if e.owner == owner and e.status in ACTIVE]
            for execution in mine:
                self._executions[execution.id] = replace(execution, status=QUEUED, owner=None, started_at=None)
            return len(mine)

    def adopt_orphans(self, owner: str, *, dead_owners: list[str], limit: int) -> list[Execution]:
        check_limit(limit)
        with self._lock:
            orphans = sorted(
                (
                    e
                    for e in self._executions.values()
                    if (e.status is QUEUED and e.owner is None) or (e.status in ACTIVE and e.owner in dead_owners)
                ),
                key=lambda e: (e.created_at, e.id),
            )[:limit]
            return [self._save(replace(e, status=QUEUED, owner=owner, started_at=None)) for e in orphans]

    def count_queued(self) -> int:
        with self._lock:
            return sum(1 for e in self._executions.values() if e.status is QUEUED)

    def queued_unowned(self, *, created_before: datetime, limit: int) -> list[str]:
        check_limit(limit)
        with self._lock:
            waiting = sorted((e.created_at, e.id) for e in self._executions.values()
                             if e.status is QUEUED and e.owner is None and e.created_at < created_before)
        return [execution_id for _, execution_id in waiting[:limit]]

    def purge_executions(self, *, before: datetime, limit: int | None = None) -> int:
        if limit is not None:
            check_limit(limit)
        with self._lock:
            old = sorted((e for e in self._executions.values() if e.status.terminal and e.created_at < before),
                         key=lambda e: (e.created_at, e.id))
            doomed = {e.id for e in old[:limit]}
            for execution_id in doomed:
                del self._executions[execution_id]
                self._steps.pop(execution_id, None)
            self._idempotency = {k: v for k, v in self._idempotency.items() if v[0] not in doomed}
            return len(doomed)

    # --- process registry --------------------------------------------------------------------------
    def heartbeat(self, worker: WorkerRecord) -> None:
        with self._lock:
            self._workers[worker.id] = worker

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            return sorted(self._workers.values(), key=lambda w: w.id)

    def remove_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    # --- rate limiting -------------------------------------------------------------------------------
    def take_tokens(self, bucket: str, *, want: int, rate: float, burst: float, now: datetime) -> tuple[int, float]:
        with self._lock:
            self._buckets[bucket], taken, wait = take_from_bucket(self._buckets.get(bucket), want=want, rate=rate,
                                                                  burst=burst, now=now)
            return taken, wait

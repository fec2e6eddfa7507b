"""The one storage interface. Blueprints, services and the engine use only this; never raw SQL.

Every backend (SQLite, memory, later PostgreSQL) must pass tests/test_store_contract.py, which is the
definition of correct behaviour. Rules shared by all backends:

- Timestamps in and out are timezone-aware UTC datetimes; `now` is always passed in (no hidden clock).
- Ids are made by the caller (`models.new_id`) and sort by creation time; lists are newest first
  (id descending) and the cursor is the last id of the previous page.
- Every tenant-scoped read and write puts `tenant_id` in the query itself: another tenant's object is
  simply not found (None / False), never fetched and then filtered.
- Each method is one transaction: it commits when it returns and changes nothing when it raises.
- Execution ownership: `owner` is the id of the process (see `register_worker`) whose engine holds the
  execution in memory. A `queued` execution with an owner is in that process's queue, or running there
  without a claim (a one-step execution its owner inserted or adopted: `running` is recorded only if it
  runs long, by `mark_running`); with owner None it is waiting to be adopted or claimed. `claim_execution`,
  `finish_execution` and `adopt_orphans` are atomic compare-and-set operations on status and owner, so two
  processes can never both run one execution, and a stale owner's outcome is refused.
- Steps: a workflow's `steps` are stored with it (a plain one-step `main` workflow as action_type + config
  alone). An execution's step records (StepRecord, keyed by step name) are written only by its owner
  while it runs (`record_step`, `finish_execution`: the same compare-and-set), or with the execution
  itself (`create_execution`, a replay that resumes); they go when the execution is purged.
- Distributed mode (engine/distributed.py): web processes record executions with owner None and enqueue
  them on the broker; any worker may claim them. `count_queued` is the shared backlog and
  `queued_unowned` what the sweeper re-enqueues when a message was lost (added in wave 2).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from app.models import ApiKey, Credential, Execution, ExecutionStatus, Page, StepRecord, Tenant, User, Workflow


class StoreError(Exception):
    """The store is unreachable or failed; maps to 503 in the API."""


class DuplicateError(StoreError):
    """A unique field (user email, key prefix, tenant name) is taken."""


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    heartbeat_at: datetime


class Store(ABC):
    # --- lifecycle ---------------------------------------------------------------------------
    @abstractmethod
    def init_schema(self) -> None:
        """Create or migrate the schema; safe to call twice."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreError unless the store answers a trivial query."""

    @abstractmethod
    def close(self) -> None:
        """Release connections held by the calling thread (and the store's, at shutdown)."""

    def shutdown(self) -> None:
        """Release every resource at process exit; the default is close()."""
        self.close()

    def probe_write(self, *, now: datetime) -> None:
        """Commit a trivial write or raise StoreError: readiness asks whether the store can write (a
        full disk still reads). The default refills a private token bucket, a one-row upsert in every
        backend; a backend may override it with something cheaper."""
        self.take_tokens("ipaas:write-probe", want=1, rate=1e6, burst=1e6, now=now)

    # --- tenants, users, API keys ------------------------------------------------------------------
    @abstractmethod
    def ensure_tenant(self, name: str, *, tenant_id: str, now: datetime) -> Tenant:
        """Return the tenant called `name`, creating it with `tenant_id` if missing."""

    @abstractmethod
    def create_user(self, user: User) -> User:
        """Insert a user; DuplicateError if the email is taken (emails are unique, case-insensitive)."""

    @abstractmethod
    def get_user_by_email(self, email: str) -> User | None:
        """Find a user by email, case-insensitively."""

    @abstractmethod
    def add_api_key(self, key: ApiKey) -> ApiKey:
        """Insert a key record (hash only); DuplicateError if the prefix is taken."""

    @abstractmethod
    def get_api_key(self, prefix: str) -> ApiKey | None:
        """Find a key record by its visible prefix, revoked or not."""

    @abstractmethod
    def revoke_api_key(self, prefix: str, *, now: datetime) -> bool:
        """Mark a key revoked; False if no such key or already revoked."""

    # --- workflows ---------------------------------------------------------------------------------
    @abstractmethod
    def create_workflow(self, workflow: Workflow) -> Workflow:
        """Insert a workflow and return it."""

    @abstractmethod
    def get_workflow(self, tenant_id: str | None, workflow_id: str) -> Workflow | None:
        """Return a live (not deleted) workflow of that tenant; tenant_id None only for the webhook
        receiver and the engine, which know the workflow only by id."""

    @abstractmethod
    def list_workflows(self, tenant_id: str | None, *, limit: int, cursor: str | None = None) -> Page[Workflow]:
        """Live workflows, newest first; tenant_id None lists all tenants (CLI only)."""

    @abstractmethod
    def update_workflow(self, workflow: Workflow) -> Workflow | None:
        """Replace the mutable fields (name, types, config, enabled, secret, signature_scheme, updated_at)
        of the workflow with this id AND tenant_id; None if there is none."""

    @abstractmethod
    def delete_workflow(self, tenant_id: str, workflow_id: str, *, now: datetime) -> bool:
        """Delete the workflow (its executions stay readable) and cancel its queued and running
        executions with cancelled_by 'workflow deleted', in one transaction."""

    # --- executions --------------------------------------------------------------------------------
    @abstractmethod
    def create_execution(
        self, execution: Execution, *, idempotency_key: str | None = None, idempotency_ttl: float = 86400.0,
        steps: Sequence[StepRecord] = (),
    ) -> tuple[Execution, bool]:
        """Insert a queued execution, with its step records `steps` if any (a replay that resumes after
        the steps that succeeded), and return (it, True).

        With an idempotency key (scoped to the workflow): if the same key was used for this workflow less
        than `idempotency_ttl` seconds before `execution.created_at`, insert nothing and return
        (the first execution, False). Enforced by a unique constraint, so racing callers in different
        threads or processes get one execution between them."""

    @abstractmethod
    def find_by_idempotency_key(self, workflow_id: str, key: str, *, since: datetime) -> Execution | None:
        """The execution that used `key` for this workflow after `since`, if any (a cheap read that
        spares a repeat the queue; create_execution still decides races)."""

    @abstractmethod
    def get_execution(self, tenant_id: str | None, execution_id: str) -> Execution | None:
        """Return an execution of that tenant (tenant_id None: any, for the engine)."""

    @abstractmethod
    def list_executions(
        self,
        tenant_id: str | None,
        *,
        workflow_id: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Execution]:
        """Executions newest first, optionally filtered; tenant_id None lists all tenants (CLI only)."""

    @abstractmethod
    def claim_execution(self, execution_id: str, *, owner: str, now: datetime) -> Execution | None:
        """Move a queued execution owned by `owner` (or by nobody) to running, owned by `owner`, with
        started_at = now; return it, or None if it is not queued (cancelled, taken, gone)."""

    @abstractmethod
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
        """Record the terminal outcome of a queued or running execution owned by `owner` (queued: its
        owner ran it without a claim, see Runner), and in the same transaction the step records `steps`
        (inserted or replaced by name); started_at is kept if the row has one, else set to `started_at`.
        False (and no change) if it is no longer queued or running under that owner. A cancel requested
        meanwhile keeps its cancelled_by unless one is given."""

    @abstractmethod
    def record_step(self, execution_id: str, *, owner: str, step: StepRecord) -> bool:
        """Insert or replace (by name) one step record of a running execution owned by `owner`: the
        checkpoint committed before the next step starts. False (and no change) if the execution is no
        longer running under that owner, as for finish_execution."""

    @abstractmethod
    def list_steps(self, tenant_id: str | None, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """The step records of these executions by execution id, each list by position (workflow order);
        every id given is a key, with [] for an execution without records, unknown, or of another tenant
        (tenant_id None: any tenant, for the engine)."""

    @abstractmethod
    def request_cancel(self, tenant_id: str, execution_id: str, *, by: str, now: datetime) -> Execution | None:
        """Cancel: a queued execution with no owner becomes cancelled at once; a running one, or a queued
        one that a process owns (it may be starting it without a claim), gets cancelled_by set so its
        owner stops it, or finishes it cancelled unsent; a terminal one is unchanged. Return the
        execution as it now is, or None if the tenant has no such execution."""

    @abstractmethod
    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        """(execution_id, cancelled_by) of queued or running executions of `owner` whose cancel was
        requested."""

    @abstractmethod
    def mark_running(self, owner: str, started: Mapping[str, datetime]) -> int:
        """Record as running, with their started_at, the executions (id -> started_at) that `owner` runs
        without a claim and that are still queued under it; return how many changed. One transaction."""

    @abstractmethod
    def release_executions(self, owner: str) -> int:
        """Put every queued or running execution of `owner` back to queued with no owner (shutdown);
        return how many."""

    @abstractmethod
    def adopt_orphans(self, owner: str, *, dead_owners: list[str], limit: int) -> list[Execution]:
        """Atomically take up to `limit` executions that are queued with no owner, or queued/running
        under one of `dead_owners`, oldest first: they become queued, owned by `owner`. Return them."""

    @abstractmethod
    def count_queued(self) -> int:
        """How many executions are queued, all tenants and owners together (the shared backlog)."""

    @abstractmethod
    def queued_unowned(self, *, created_before: datetime, limit: int) -> list[str]:
        """Ids of up to `limit` queued executions with no owner created before `created_before`, oldest
        first (created_at, then id); a read that changes nothing."""

    def purge_executions(self, *, before: datetime, limit: int | None = None) -> int:
        """Delete terminal executions created before `before`, oldest first, at most `limit` of them
        (None: all); return how many. Small limits keep each transaction, and its write lock, short."""

    # --- process registry (crash recovery) ---------------------------------------------------------
    @abstractmethod
    def heartbeat(self, worker: WorkerRecord) -> None:
        """Insert or refresh a process's record."""

    @abstractmethod
    def list_workers(self) -> list[WorkerRecord]:
        """All registered processes."""

    @abstractmethod
    def remove_worker(self, worker_id: str) -> None:
        """Forget a process (clean shutdown, or after its work was adopted)."""

    # --- rate limiting -------------------------------------------------------------------------------
    @abstractmethod
    def take_tokens(self, bucket: str, *, want: int, rate: float, burst: float, now: datetime) -> tuple[int, float]:
        """Token bucket shared by every process using this store: a bucket starts full (`burst`
        tokens) and refills at `rate` per second. Take up to `want` whole tokens, as many as there
        are, and return (how many, 0.0); with none to take, return (0, seconds until one is there)."""

    # --- schedules -----------------------------------------------------------------------------------
    @abstractmethod
    def list_scheduled_workflows(self) -> list[Workflow]:
        """Every live, enabled workflow of trigger_type 'schedule', of all tenants (the scheduler's)."""

    @abstractmethod
    def create_scheduled_execution(self, execution: Execution, *, slot: datetime) -> Execution | None:
        """Record `execution` as the one of its workflow's schedule `slot`, in one transaction with the
        claim of the unique (workflow_id, slot) row; None (and nothing recorded) if that slot or a later
        one of the workflow was claimed already, or the workflow is deleted or disabled. So however many
        processes fire a slot, one execution is recorded."""

    # --- credentials ----------------------------------------------------------------------------------
    @abstractmethod
    def create_credential(self, credential: Credential) -> Credential:
        """Insert a credential (its data already encrypted) and return it."""

    @abstractmethod
    def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        """Return the tenant's credential, or None (another tenant's is not found)."""

    @abstractmethod
    def list_credentials(self, tenant_id: str, *, limit: int, cursor: str | None = None) -> Page[Credential]:
        """The tenant's credentials, newest first."""

    @abstractmethod
    def update_credential(self, credential: Credential) -> Credential | None:
        """Replace name, type, encrypted_data and updated_at of the credential with this id AND
        tenant_id; None if there is none."""

    @abstractmethod
    def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        """Delete the tenant's credential; False if there is none."""

    # --- secrets at rest --------------------------------------------------------------------------------
    @abstractmethod
    def rewrite_secrets(self, transform: Callable[[str], str]) -> int:
        """Apply `transform` to every stored secret (workflow secrets, credential data), in ONE
        transaction: rows whose value changes are updated, and if `transform` raises for any row,
        nothing changes and the exception propagates. Return how many rows changed."""

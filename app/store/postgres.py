"""The PostgreSQL backend: psycopg 3 on a psycopg_pool pool per process (see _pg_db for what we rely on).

Every method is one statement in autocommit, or one transaction of a few when it must read before it
writes. Races are settled by PostgreSQL itself: row locks of `UPDATE ... WHERE status = 'queued'`
(a second claimer waits, then finds the row no longer queued), `INSERT ... ON CONFLICT` for
idempotency keys, tenants and heartbeats, `FOR UPDATE SKIP LOCKED` so that adopters split orphans
between them without waiting, and `SELECT ... FOR UPDATE` for token buckets."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, TypeVar

import psycopg

from app.models import ApiKey, Execution, ExecutionStatus, Page, StepRecord, Tenant, User, Workflow
from app.store import _pg_rows as rows
from app.store._pg_credentials import PostgresCredentialsMixin
from app.store._pg_db import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, Database, apply_migrations
from app.store._pg_rows import Row, optional_json, text, to_json, ts
from app.store._rules import (
    WORKFLOW_DELETED,
    Bucket,
    check_limit,
    email_key,
    idempotency_cutoff,
    make_page,
    take_from_bucket,
    terminal_status,
)
from app.store.base import Store, WorkerRecord

T = TypeVar("T")
Connection = psycopg.Connection[Row]

# The cancel rule (see Store.request_cancel): queued with no owner ends at once; running, or queued under
# an owner (which may be starting it without a claim), is flagged for that owner; an earlier reason is kept.
_CANCEL = """
    UPDATE executions SET
        status = CASE WHEN status = 'queued' AND owner IS NULL THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'queued' AND owner IS NULL THEN %(now)s ELSE finished_at END,
        cancelled_by = COALESCE(cancelled_by, %(by)s)
    WHERE tenant_id = %(tenant_id)s AND status IN ('queued', 'running') AND """


def _one(conn: Connection, sql: str, params: Any = None) -> Row | None:
    return conn.execute(sql, params).fetchone()


def _upsert_steps(conn: Connection, step_values: list[dict[str, Any]]) -> None:
    if step_values:
        conn.cursor().executemany(rows.UPSERT_STEP, step_values)


def _equal(**filters: Any) -> tuple[list[str], dict[str, Any]]:
    """Return `column = %(column)s` clauses and their parameters for the optional filters given."""
    given = {column: value for column, value in filters.items() if value is not None}
    return [f"{column} = %({column})s" for column in given], given


class PostgresStore(PostgresCredentialsMixin, Store):
    """Safe to create before a fork: nothing connects until the first call in the process that uses it."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._db = Database(url, pool_size=pool_size, timeout=timeout)

    @property
    def url(self) -> str:
        """The database URL without its password."""
        return self._db.url

    def _get(self, mapper: Callable[[Row], T], sql: str, params: Any) -> T | None:
        found = self._db.query(sql, params)
        return mapper(found[0]) if found else None

    def _newest_first(self, table: str, clauses: list[str], params: dict[str, Any], limit: int,
                      cursor: str | None) -> list[Row]:
        """Rows of `table` matching every clause, newest first, one more than `limit` to tell if more exist."""
        check_limit(limit)
        if cursor is not None:
            clauses, params = clauses + ["id < %(cursor)s"], {**params, "cursor": cursor}
        where = " AND ".join(clauses) or "true"
        return self._db.query(f"SELECT * FROM {table} WHERE {where} ORDER BY id DESC LIMIT %(limit)s",
                              {**params, "limit": limit + 1})

    # --- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        apply_migrations(self._db)

    def ping(self) -> None:
        self._db.query("SELECT 1")

    def close(self) -> None:
        """Nothing to do: a thread holds a connection only for the length of one call."""

    def shutdown(self) -> None:
        """Close the pool (waiting for connections in use to come back); later calls raise StoreError."""
        self._db.close()

    # --- tenants, users, API keys ------------------------------------------------------------------
    def ensure_tenant(self, name: str, *, tenant_id: str, now: datetime) -> Tenant:
        with self._db.transaction() as conn:
            # A racing insert of the same name makes this one wait for it, then do nothing; the
            # SELECT (a new snapshot, READ COMMITTED) then sees the winner's row.
            conn.execute("INSERT INTO tenants (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                         (tenant_id, name, ts(now)))
            return rows.tenant_from(_one(conn, "SELECT * FROM tenants WHERE name = %s", (name,)))

    def create_user(self, user: User) -> User:
        found = self._db.query(
            "INSERT INTO users (id, tenant_id, email, email_key, created_at) VALUES (%s, %s, %s, %s, %s) RETURNING *",
            (user.id, user.tenant_id, user.email, email_key(user.email), ts(user.created_at)))
        return rows.user_from(found[0])

    def get_user_by_email(self, email: str) -> User | None:
        return self._get(rows.user_from, "SELECT * FROM users WHERE email_key = %s", (email_key(email),))

    def add_api_key(self, key: ApiKey) -> ApiKey:
        found = self._db.query(
            "INSERT INTO api_keys (id, user_id, tenant_id, prefix, key_hash, created_at, revoked_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (key.id, key.user_id, key.tenant_id, key.prefix, key.key_hash, ts(key.created_at), ts(key.revoked_at)))
        return rows.api_key_from(found[0])

    def get_api_key(self, prefix: str) -> ApiKey | None:
        return self._get(rows.api_key_from, "SELECT * FROM api_keys WHERE prefix = %s", (prefix,))

    def revoke_api_key(self, prefix: str, *, now: datetime) -> bool:
        return bool(self._db.query(
            "UPDATE api_keys SET revoked_at = %s WHERE prefix = %s AND revoked_at IS NULL RETURNING id",
            (ts(now), prefix)))

    # --- workflows ---------------------------------------------------------------------------------
    def create_workflow(self, workflow: Workflow) -> Workflow:
        w = workflow
        found = self._db.query(
            "INSERT INTO workflows (id, tenant_id, user_id, name, trigger_type, action_type, config, steps,"
            " enabled, secret, created_at, updated_at, signature_scheme, schedule)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s::json, %s, %s, %s, %s, %s, %s::json) RETURNING *",
            (w.id, w.tenant_id, w.user_id, w.name, w.trigger_type, w.action_type, to_json(w.config),
             rows.steps_json(w), w.enabled, w.secret, ts(w.created_at), ts(w.updated_at), w.signature_scheme,
             optional_json(w.schedule)))
        return rows.workflow_from(found[0])

    def get_workflow(self, tenant_id: str | None, workflow_id: str) -> Workflow | None:
        clauses, params = _equal(tenant_id=tenant_id)
        where = " AND ".join(["id = %(id)s", "deleted_at IS NULL", *clauses])
        return self._get(rows.workflow_from, f"SELECT * FROM workflows WHERE {where}", {**params, "id": workflow_id})

    def list_workflows(self, tenant_id: str | None, *, limit: int, cursor: str | None = None) -> Page[Workflow]:
        clauses, params = _equal(tenant_id=tenant_id)
        found = self._newest_first("workflows", clauses + ["deleted_at IS NULL"], params, limit, cursor)
        return make_page([rows.workflow_from(row) for row in found], limit)

    def update_workflow(self, workflow: Workflow) -> Workflow | None:
        w = workflow
        return self._get(
            rows.workflow_from,
            "UPDATE workflows SET name = %s, trigger_type = %s, action_type = %s, config = %s::json,"
            " steps = %s::json, enabled = %s, secret = %s, updated_at = %s, signature_scheme = %s,"
            " schedule = %s::json WHERE id = %s AND tenant_id = %s AND deleted_at IS NULL RETURNING *",
            (w.name, w.trigger_type, w.action_type, to_json(w.config), rows.steps_json(w), w.enabled, w.secret,
             ts(w.updated_at), w.signature_scheme, optional_json(w.schedule), w.id, w.tenant_id))

    def delete_workflow(self, tenant_id: str, workflow_id: str, *, now: datetime) -> bool:
        params = {"now": ts(now), "by": WORKFLOW_DELETED, "tenant_id": tenant_id, "id": workflow_id}
        with self._db.transaction() as conn:
            deleted = conn.execute(
                "UPDATE workflows SET deleted_at = %(now)s"
                " WHERE id = %(id)s AND tenant_id = %(tenant_id)s AND deleted_at IS NULL", params).rowcount
            if deleted:
                conn.execute(_CANCEL + "workflow_id = %(id)s", params)
            return deleted == 1

    # --- executions --------------------------------------------------------------------------------
    def create_execution(
        self, execution: Execution, *, idempotency_key: str | None = None, idempotency_ttl: float = 86400.0,
        steps: Sequence[StepRecord] = (),
    ) -> tuple[Execution, bool]:
        values = rows.execution_values(execution)  # encoded (and checked) before a connection is taken
        step_values = [rows.step_values(execution.id, record) for record in steps]
        if idempotency_key is None and not step_values:
            self._db.query(rows.INSERT_EXECUTION, values)
            return execution, True
        with self._db.transaction() as conn:
            if idempotency_key is not None:
                first = self._use_key(conn, execution, idempotency_key, idempotency_ttl)
                if first is not None:
                    return rows.execution_from(first), False
            conn.execute(rows.INSERT_EXECUTION, values)
            _upsert_steps(conn, step_values)
        # What was inserted is what `execution` holds: the JSON columns decode to what they encode.
        return execution, True

    @staticmethod
    def _use_key(conn: Connection, execution: Execution, key: str, ttl: float) -> Row | None:
        """Point `key` at the execution unless an earlier one holds it within the TTL; return that one.

        A racing transaction that inserted the same key makes this INSERT wait for its outcome, then
        see its row as the conflict: one of two racers gets the key, the other the winner's execution."""
        taken = _one(
            conn,
            "INSERT INTO idempotency_keys (workflow_id, key, execution_id, created_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (workflow_id, key) DO UPDATE"
            " SET execution_id = excluded.execution_id, created_at = excluded.created_at"
            " WHERE idempotency_keys.created_at <= %s RETURNING execution_id",
            (execution.workflow_id, key, execution.id, ts(execution.created_at),
             idempotency_cutoff(execution.created_at, ttl)))
        if taken is not None:
            return None
        return _one(conn, "SELECT e.* FROM idempotency_keys k JOIN executions e ON e.id = k.execution_id"
                          " WHERE k.workflow_id = %s AND k.key = %s", (execution.workflow_id, key))

    def find_by_idempotency_key(self, workflow_id: str, key: str, *, since: datetime) -> Execution | None:
        return self._get(rows.execution_from,
                         "SELECT e.* FROM idempotency_keys k JOIN executions e ON e.id = k.execution_id"
                         " WHERE k.workflow_id = %s AND k.key = %s AND k.created_at > %s",
                         (workflow_id, key, ts(since)))

    def get_execution(self, tenant_id: str | None, execution_id: str) -> Execution | None:
        clauses, params = _equal(tenant_id=tenant_id)
        where = " AND ".join(["id = %(id)s", *clauses])
        return self._get(rows.execution_from, f"SELECT * FROM executions WHERE {where}", {**params, "id": execution_id})

    def list_executions(
        self,
        tenant_id: str | None,
        *,
        workflow_id: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Execution]:
        status_value = ExecutionStatus(status).value if status is not None else None
        clauses, params = _equal(tenant_id=tenant_id, workflow_id=workflow_id, status=status_value)
        found = self._newest_first("executions", clauses, params, limit, cursor)
        return make_page([rows.execution_from(row) for row in found], limit)

    def claim_execution(self, execution_id: str, *, owner: str, now: datetime) -> Execution | None:
        # A queued execution with a cancel request was cancelled while running in a process that then
        # died: finish it as cancelled instead of running it again.
        found = self._db.query("""
            UPDATE executions SET
                status = CASE WHEN cancelled_by IS NULL THEN 'running' ELSE 'cancelled' END,
                started_at = CASE WHEN cancelled_by IS NULL THEN %(now)s ELSE started_at END,
                finished_at = CASE WHEN cancelled_by IS NULL THEN finished_at ELSE %(now)s END,
                owner = %(owner)s
            WHERE id = %(id)s AND status = 'queued' AND (owner IS NULL OR owner = %(owner)s)
            RETURNING *""", {"now": ts(now), "owner": owner, "id": execution_id})
        return rows.execution_from(found[0]) if found and found[0]["status"] == "running" else None

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
        params = (status.value, attempts, ts(now), optional_json(result), text(error), cancelled_by,
                  None if started_at is None else ts(started_at), execution_id, owner)
        step_values = [rows.step_values(execution_id, record) for record in steps]
        with self._db.transaction() as conn:
            # The row lock this UPDATE takes (compare-and-set on owner and status) is held until commit.
            finished = conn.execute(
                "UPDATE executions SET status = %s, attempts = %s, finished_at = %s, result = %s::json, error = %s,"
                " cancelled_by = COALESCE(%s, cancelled_by), started_at = COALESCE(started_at, %s)"
                " WHERE id = %s AND owner = %s AND status IN ('queued', 'running')",
                params).rowcount == 1
            if finished:
                _upsert_steps(conn, step_values)
            return finished

    def record_step(self, execution_id: str, *, owner: str, step: StepRecord) -> bool:
        values = {**rows.step_values(execution_id, step), "owner": owner}
        return bool(self._db.query(rows.RECORD_STEP, values))

    def list_steps(self, tenant_id: str | None, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {execution_id: [] for execution_id in execution_ids}
        if not found:
            return found
        clauses, params = _equal(**{"e.tenant_id": tenant_id})
        where = " AND ".join(["s.execution_id = ANY(%(ids)s)", *clauses])
        for row in self._db.query(
                "SELECT s.* FROM execution_steps s JOIN executions e ON e.id = s.execution_id"
                f" WHERE {where} ORDER BY s.execution_id, s.position, s.name", {**params, "ids": list(found)}):
            found[row["execution_id"]].append(rows.step_from(row))
        return found

    def request_cancel(self, tenant_id: str, execution_id: str, *, by: str, now: datetime) -> Execution | None:
        params = {"now": ts(now), "by": by, "tenant_id": tenant_id, "id": execution_id}
        with self._db.transaction() as conn:
            conn.execute(_CANCEL + "id = %(id)s", params)
            row = _one(conn, "SELECT * FROM executions WHERE id = %(id)s AND tenant_id = %(tenant_id)s", params)
            return rows.execution_from(row) if row else None

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        found = self._db.query(
            "SELECT id, cancelled_by FROM executions"
            " WHERE status IN ('queued', 'running') AND owner = %s AND cancelled_by IS NOT NULL ORDER BY id",
            (owner,))
        return [(row["id"], row["cancelled_by"]) for row in found]

    def mark_running(self, owner: str, started: Mapping[str, datetime]) -> int:
        if not started:
            return 0
        return len(self._db.query(
            "UPDATE executions AS e SET status = 'running', started_at = s.started_at"
            " FROM unnest(%(ids)s::text[], %(started)s::timestamptz[]) AS s(id, started_at)"
            " WHERE e.id = s.id AND e.owner = %(owner)s AND e.status = 'queued' RETURNING e.id",
            {"ids": list(started), "started": [ts(at) for at in started.values()], "owner": owner}))

    def release_executions(self, owner: str) -> int:
        return len(self._db.query(
            "UPDATE executions SET status = 'queued', owner = NULL, started_at = NULL"
            " WHERE status IN ('queued', 'running') AND owner = %s RETURNING id", (owner,)))

    def adopt_orphans(self, owner: str, *, dead_owners: list[str], limit: int) -> list[Execution]:
        check_limit(limit)
        # SKIP LOCKED: rows another adopter (or a claim) holds are left to it instead of waited for,
        # so adopters running at once split the orphans between them.
        found = self._db.query(
            """UPDATE executions SET status = 'queued', owner = %(owner)s, started_at = NULL
               WHERE id IN (SELECT id FROM executions
                            WHERE (status = 'queued' AND owner IS NULL)
                               OR (status IN ('queued', 'running') AND owner = ANY(%(dead)s))
                            ORDER BY created_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            {"owner": owner, "dead": list(dead_owners), "limit": limit})
        # RETURNING gives no order guarantee.
        return sorted(map(rows.execution_from, found), key=lambda e: (e.created_at, e.id))

    def count_queued(self) -> int:
        return self._db.query("SELECT count(*) AS n FROM executions WHERE status = 'queued'")[0]["n"]

    def queued_unowned(self, *, created_before: datetime, limit: int) -> list[str]:
        check_limit(limit)
        found = self._db.query(
            "SELECT id FROM executions WHERE status = 'queued' AND owner IS NULL AND created_at < %s"
            " ORDER BY created_at, id LIMIT %s", (ts(created_before), limit))
        return [row["id"] for row in found]

    def purge_executions(self, *, before: datetime, limit: int | None = None) -> int:
        # Step records and idempotency keys go with their execution (ON DELETE CASCADE).
        if limit is None:
            return self._db.execute(
                "DELETE FROM executions WHERE status NOT IN ('queued', 'running') AND created_at < %s",
                (ts(before),))
        check_limit(limit)
        # SKIP LOCKED: a row another transaction holds (a purge running at once, a cancel) is left for a
        # later batch instead of waited for; each batch locks only the rows it deletes.
        return self._db.execute(
            "DELETE FROM executions WHERE id IN (SELECT id FROM executions"
            " WHERE status NOT IN ('queued', 'running') AND created_at < %s"
            " ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED)", (ts(before), limit))

    # --- process registry --------------------------------------------------------------------------
    def heartbeat(self, worker: WorkerRecord) -> None:
        self._db.query(
            "INSERT INTO workers (id, host, pid, heartbeat_at) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
            " SET host = excluded.host, pid = excluded.pid, heartbeat_at = excluded.heartbeat_at",
            (worker.id, worker.host, worker.pid, ts(worker.heartbeat_at)))

    def list_workers(self) -> list[WorkerRecord]:
        return [rows.worker_from(row) for row in self._db.query("SELECT * FROM workers ORDER BY id")]

    def remove_worker(self, worker_id: str) -> None:
        self._db.query("DELETE FROM workers WHERE id = %s", (worker_id,))

    # --- rate limiting -------------------------------------------------------------------------------
    def take_tokens(self, bucket: str, *, want: int, rate: float, burst: float, now: datetime) -> tuple[int, float]:
        ts(now)
        select = "SELECT tokens, updated_at FROM rate_buckets WHERE bucket = %s FOR UPDATE"
        with self._db.transaction() as conn:
            row = _one(conn, select, (bucket,))
            if row is None:
                # A new bucket starts full; of two racing first takers, one inserts and both then
                # lock that one row, so neither gets a full bucket of its own.
                conn.execute("INSERT INTO rate_buckets (bucket, tokens, updated_at) VALUES (%s, %s, %s)"
                             " ON CONFLICT (bucket) DO NOTHING", (bucket, float(burst), now))
                row = _one(conn, select, (bucket,))
            current = Bucket(row["tokens"], row["updated_at"])
            state, taken, wait = take_from_bucket(current, want=want, rate=rate, burst=burst, now=now)
            conn.execute("UPDATE rate_buckets SET tokens = %s, updated_at = %s WHERE bucket = %s",
                         (state.tokens, state.updated_at, bucket))
            return taken, wait

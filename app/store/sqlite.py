"""The SQLite backend: WAL, reads on one connection per thread, writes group-committed on one connection.

Each write method is written as a function of a connection, `write(conn)`, which the store's group
committer (see _group_commit) runs in its own savepoint of a shared BEGIN IMMEDIATE transaction; the
method returns once that transaction has committed. So the contract's "each method is one transaction"
holds for what callers can observe, at one fsync per batch instead of one per write.

While a batch runs it holds the database's write lock for every process, so the hot writes
(create, claim and finish an execution) encode their parameters and decode their rows in their own
thread, outside the batch, and their `write` does nothing but SQL."""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, TypeVar

from app.models import ApiKey, Execution, ExecutionStatus, Page, StepRecord, Tenant, User, Workflow
from app.store import _sqlite_rows as rows
from app.store._group_commit import GroupCommitter
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
from app.store._sqlite_db import Connections, apply_migrations, one as _one
from app.store._sqlite_credentials import SqliteCredentialsMixin
from app.store._sqlite_schedules import SqliteSchedulesMixin
from app.store._sqlite_rows import from_ts, to_json, to_ts
from app.store.base import Store, WorkerRecord

T = TypeVar("T")

log = logging.getLogger(__name__)

# The cancel rule (see Store.request_cancel): queued with no owner ends at once; running, or queued under
# an owner (which may be starting it without a claim), is flagged for that owner; an earlier reason is kept.
_CANCEL = """
    UPDATE executions SET
        status = CASE WHEN status = 'queued' AND owner IS NULL THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'queued' AND owner IS NULL THEN :now ELSE finished_at END,
        cancelled_by = COALESCE(cancelled_by, :by)
    WHERE tenant_id = :tenant_id AND status IN ('queued', 'running') AND """


# Executions waiting to be adopted: handed back (queued, no owner), or left by a dead process.
_ORPHANED = """((status = 'queued' AND owner IS NULL)
                OR (status IN ('queued', 'running') AND owner IN (SELECT value FROM json_each(:dead))))"""


def _schedule(workflow: Workflow) -> str | None:
    return None if workflow.schedule is None else to_json(workflow.schedule)


def _equal(**filters: Any) -> tuple[list[str], list[Any]]:
    """Return `column = ?` clauses and their parameters for the optional filters that are given."""
    given = {column: value for column, value in filters.items() if value is not None}
    return [f"{column} = ?" for column in given], list(given.values())


class SqliteStore(SqliteSchedulesMixin, SqliteCredentialsMixin, Store):
    """Create it in the process that uses it: its connections do not survive a fork
    (gunicorn loads the app in each worker, after the fork)."""

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000) -> None:
        # FULL by default: a 202 promises the execution is recorded, so every commit must reach the disk.
        self._db = Connections(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        self._committer = GroupCommitter(self._db.connect, handoff_path=f"{path}-writer.lock")
        self.path = path

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` as one write of the store: its result once committed, or its exception."""
        return self._committer.write(fn)

    def _get(self, mapper: Callable[[sqlite3.Row], T], sql: str, params: Any) -> T | None:
        found = self._db.read(sql, params)
        return mapper(found[0]) if found else None

    def _newest_first(
        self, table: str, clauses: list[str], params: list[Any], limit: int, cursor: str | None
    ) -> list[sqlite3.Row]:
        """Rows of `table` matching every clause, newest first, one more than `limit` to tell if more exist."""
        check_limit(limit)
        if cursor is not None:
            clauses, params = clauses + ["id < ?"], params + [cursor]
        where = " AND ".join(clauses) or "1"
        return self._db.read(f"SELECT * FROM {table} WHERE {where} ORDER BY id DESC LIMIT ?", params + [limit + 1])

    # --- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        with self._db.transaction() as conn:
            apply_migrations(conn)

    def ping(self) -> None:
        self._db.read("SELECT 1")

    def close(self) -> None:
        """Close the calling thread's connection and those left by threads that have ended."""
        me = threading.current_thread()
        self._db.close(lambda thread: thread is me or not thread.is_alive())

    def close_all(self) -> None:
        """Close every reader connection; only at shutdown, when no other thread uses the store."""
        self._db.close(lambda thread: True)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Refuse new writes (they raise StoreError), wait up to `timeout` seconds for the writes already
        submitted to commit, and close every connection."""
        if not self._committer.shutdown(timeout):
            log.error("the store's writes are still running %.0f s after shutdown", timeout)
        self.close_all()

    def stats(self) -> dict[str, int]:
        """The group committer's counters: commits (batches committed), writes (in those),
        failed_commits, largest_batch, queued (writes waiting for their batch now)."""
        return self._committer.stats()

    # --- tenants, users, API keys ------------------------------------------------------------------
    def ensure_tenant(self, name: str, *, tenant_id: str, now: datetime) -> Tenant:
        def write(conn: sqlite3.Connection) -> Tenant:
            conn.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (tenant_id, name, to_ts(now)),
            )
            return rows.tenant_from(_one(conn, "SELECT * FROM tenants WHERE name = ?", (name,)))

        return self._write(write)

    def create_user(self, user: User) -> User:
        def write(conn: sqlite3.Connection) -> User:
            row = _one(
                conn,
                "INSERT INTO users (id, tenant_id, email, email_key, created_at) VALUES (?, ?, ?, ?, ?) RETURNING *",
                (user.id, user.tenant_id, user.email, email_key(user.email), to_ts(user.created_at)),
            )
            return rows.user_from(row)

        return self._write(write)

    def get_user_by_email(self, email: str) -> User | None:
        return self._get(rows.user_from, "SELECT * FROM users WHERE email_key = ?", (email_key(email),))

    def add_api_key(self, key: ApiKey) -> ApiKey:
        def write(conn: sqlite3.Connection) -> ApiKey:
            row = _one(
                conn,
                "INSERT INTO api_keys (id, user_id, tenant_id, prefix, key_hash, created_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (key.id, key.user_id, key.tenant_id, key.prefix, key.key_hash, to_ts(key.created_at),
                 to_ts(key.revoked_at)),
            )
            return rows.api_key_from(row)

        return self._write(write)

    def get_api_key(self, prefix: str) -> ApiKey | None:
        return self._get(rows.api_key_from, "SELECT * FROM api_keys WHERE prefix = ?", (prefix,))

    def revoke_api_key(self, prefix: str, *, now: datetime) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            sql = "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL"
            return conn.execute(sql, (to_ts(now), prefix)).rowcount == 1

        return self._write(write)

    # --- workflows ---------------------------------------------------------------------------------
    def create_workflow(self, workflow: Workflow) -> Workflow:
        w = workflow

        def write(conn: sqlite3.Connection) -> Workflow:
            row = _one(
                conn,
                "INSERT INTO workflows (id, tenant_id, user_id, name, trigger_type, action_type, config, steps,"
                " enabled, secret, created_at, updated_at, signature_scheme, schedule)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (w.id, w.tenant_id, w.user_id, w.name, w.trigger_type, w.action_type, to_json(w.config),
                 rows.steps_to_json(w), int(w.enabled), w.secret, to_ts(w.created_at), to_ts(w.updated_at),
                 w.signature_scheme, _schedule(w)),
            )
            return rows.workflow_from(row)

        return self._write(write)

    def get_workflow(self, tenant_id: str | None, workflow_id: str) -> Workflow | None:
        clauses, params = _equal(tenant_id=tenant_id)
        where = " AND ".join(["id = ?", "deleted_at IS NULL", *clauses])
        return self._get(rows.workflow_from, f"SELECT * FROM workflows WHERE {where}", [workflow_id, *params])

    def list_workflows(self, tenant_id: str | None, *, limit: int, cursor: str | None = None) -> Page[Workflow]:
        clauses, params = _equal(tenant_id=tenant_id)
        found = self._newest_first("workflows", clauses + ["deleted_at IS NULL"], params, limit, cursor)
        return make_page([rows.workflow_from(row) for row in found], limit)

    def update_workflow(self, workflow: Workflow) -> Workflow | None:
        w = workflow

        def write(conn: sqlite3.Connection) -> Workflow | None:
            row = _one(
                conn,
                "UPDATE workflows SET name = ?, trigger_type = ?, action_type = ?, config = ?, steps = ?,"
                " enabled = ?, secret = ?, updated_at = ?, signature_scheme = ?, schedule = ?"
                " WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL RETURNING *",
                (w.name, w.trigger_type, w.action_type, to_json(w.config), rows.steps_to_json(w), int(w.enabled),
                 w.secret, to_ts(w.updated_at), w.signature_scheme, _schedule(w), w.id, w.tenant_id),
            )
            return rows.workflow_from(row) if row else None

        return self._write(write)

    def delete_workflow(self, tenant_id: str, workflow_id: str, *, now: datetime) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            deleted = conn.execute(
                "UPDATE workflows SET deleted_at = ? WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
                (to_ts(now), workflow_id, tenant_id),
            ).rowcount
            if deleted:
                conn.execute(
                    _CANCEL + "workflow_id = :id",
                    {"now": to_ts(now), "by": WORKFLOW_DELETED, "tenant_id": tenant_id, "id": workflow_id},
                )
            return deleted == 1

        return self._write(write)

    # --- executions --------------------------------------------------------------------------------
    def create_execution(
        self, execution: Execution, *, idempotency_key: str | None = None, idempotency_ttl: float = 86400.0,
        steps: Sequence[StepRecord] = (),
    ) -> tuple[Execution, bool]:
        values = rows.execution_values(execution)  # encoded (and decoded below) outside the batch's time
        step_values = [rows.step_values(execution.id, record) for record in steps]

        def write(conn: sqlite3.Connection) -> sqlite3.Row | None:
            if idempotency_key is not None:
                first_id = self._use_key(conn, execution, idempotency_key, idempotency_ttl)
                if first_id is not None:
                    return _one(conn, "SELECT * FROM executions WHERE id = ?", (first_id,))
            conn.execute(rows.INSERT_EXECUTION, values)
            if step_values:
                conn.executemany(rows.UPSERT_STEP, step_values)
            return None

        first = self._write(write)
        # What was inserted is what `execution` holds: the JSON columns decode to what they encode.
        return (execution, True) if first is None else (rows.execution_from(first), False)

    @staticmethod
    def _use_key(conn: sqlite3.Connection, execution: Execution, key: str, ttl: float) -> str | None:
        """Point `key` at the execution unless an earlier one holds it within the TTL; return that one's id."""
        taken = _one(
            conn,
            "INSERT INTO idempotency_keys (workflow_id, key, execution_id, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (workflow_id, key) DO UPDATE"
            " SET execution_id = excluded.execution_id, created_at = excluded.created_at"
            " WHERE idempotency_keys.created_at <= ? RETURNING execution_id",
            (execution.workflow_id, key, execution.id, to_ts(execution.created_at),
             to_ts(idempotency_cutoff(execution.created_at, ttl))),
        )
        if taken is not None:
            return None
        sql = "SELECT execution_id FROM idempotency_keys WHERE workflow_id = ? AND key = ?"
        return _one(conn, sql, (execution.workflow_id, key))["execution_id"]

    def find_by_idempotency_key(self, workflow_id: str, key: str, *, since: datetime) -> Execution | None:
        return self._get(rows.execution_from,
                         "SELECT e.* FROM idempotency_keys k JOIN executions e ON e.id = k.execution_id"
                         " WHERE k.workflow_id = ? AND k.key = ? AND k.created_at > ?",
                         (workflow_id, key, to_ts(since)))

    def get_execution(self, tenant_id: str | None, execution_id: str) -> Execution | None:
        clauses, params = _equal(tenant_id=tenant_id)
        where = " AND ".join(["id = ?", *clauses])
        return self._get(rows.execution_from, f"SELECT * FROM executions WHERE {where}", [execution_id, *params])

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
        def write(conn: sqlite3.Connection) -> sqlite3.Row | None:
            # A queued execution with a cancel request was cancelled while running in a process that
            # then died: finish it as cancelled instead of running it again.
            return _one(
                conn,
                """UPDATE executions SET
                       status = CASE WHEN cancelled_by IS NULL THEN 'running' ELSE 'cancelled' END,
                       started_at = CASE WHEN cancelled_by IS NULL THEN :now ELSE started_at END,
                       finished_at = CASE WHEN cancelled_by IS NULL THEN finished_at ELSE :now END,
                       owner = :owner
                   WHERE id = :id AND status = 'queued' AND (owner IS NULL OR owner = :owner)
                   RETURNING *""",
                {"now": to_ts(now), "owner": owner, "id": execution_id},
            )

        row = self._write(write)
        return rows.execution_from(row) if row is not None and row["status"] == "running" else None

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
        params = (status.value, attempts, to_ts(now), None if result is None else to_json(result), error,
                  cancelled_by, None if started_at is None else to_ts(started_at), execution_id, owner)
        step_values = [rows.step_values(execution_id, record) for record in steps]

        def write(conn: sqlite3.Connection) -> bool:
            finished = conn.execute(
                "UPDATE executions SET status = ?, attempts = ?, finished_at = ?, result = ?, error = ?,"
                " cancelled_by = COALESCE(?, cancelled_by), started_at = COALESCE(started_at, ?)"
                " WHERE id = ? AND owner = ? AND status IN ('queued', 'running')",
                params,
            ).rowcount == 1
            if finished and step_values:
                conn.executemany(rows.UPSERT_STEP, step_values)
            return finished

        return self._write(write)

    def record_step(self, execution_id: str, *, owner: str, step: StepRecord) -> bool:
        values = rows.step_values(execution_id, step)

        def write(conn: sqlite3.Connection) -> bool:
            sql = "SELECT 1 FROM executions WHERE id = ? AND owner = ? AND status = 'running'"
            if _one(conn, sql, (execution_id, owner)) is None:
                return False
            conn.execute(rows.UPSERT_STEP, values)
            return True

        return self._write(write)

    def list_steps(self, tenant_id: str | None, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {execution_id: [] for execution_id in execution_ids}
        if not found:
            return found
        clauses, params = _equal(**{"e.tenant_id": tenant_id})
        where = " AND ".join(["s.execution_id IN (SELECT value FROM json_each(?))", *clauses])
        for row in self._db.read(
            "SELECT s.* FROM execution_steps s JOIN executions e ON e.id = s.execution_id"
            f" WHERE {where} ORDER BY s.execution_id, s.position, s.name",
            [json.dumps(list(found)), *params],
        ):
            found[row["execution_id"]].append(rows.step_from(row))
        return found

    def request_cancel(self, tenant_id: str, execution_id: str, *, by: str, now: datetime) -> Execution | None:
        def write(conn: sqlite3.Connection) -> Execution | None:
            params = {"now": to_ts(now), "by": by, "tenant_id": tenant_id, "id": execution_id}
            conn.execute(_CANCEL + "id = :id", params)
            row = _one(conn, "SELECT * FROM executions WHERE id = ? AND tenant_id = ?", (execution_id, tenant_id))
            return rows.execution_from(row) if row else None

        return self._write(write)

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        found = self._db.read(
            "SELECT id, cancelled_by FROM executions"
            " WHERE status IN ('queued', 'running') AND owner = ? AND cancelled_by IS NOT NULL ORDER BY id",
            (owner,),
        )
        return [(row["id"], row["cancelled_by"]) for row in found]

    def mark_running(self, owner: str, started: Mapping[str, datetime]) -> int:
        values = [(to_ts(at), execution_id, owner) for execution_id, at in started.items()]
        if not values:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            return conn.executemany("UPDATE executions SET status = 'running', started_at = ?"
                                    " WHERE id = ? AND owner = ? AND status = 'queued'", values).rowcount

        return self._write(write)

    def release_executions(self, owner: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE executions SET status = 'queued', owner = NULL, started_at = NULL"
                " WHERE status IN ('queued', 'running') AND owner = ?",
                (owner,),
            ).rowcount

        return self._write(write)

    def adopt_orphans(self, owner: str, *, dead_owners: list[str], limit: int) -> list[Execution]:
        check_limit(limit)
        params = {"owner": owner, "dead": json.dumps(list(dead_owners)), "limit": limit}
        # Every process asks every second and there is almost never anything to adopt: a read says so
        # without taking the write lock (the write below decides, should a row appear meanwhile).
        if not self._db.read(f"SELECT 1 FROM executions WHERE {_ORPHANED} LIMIT 1", params):
            return []

        def write(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"""UPDATE executions SET status = 'queued', owner = :owner, started_at = NULL
                    WHERE id IN (SELECT id FROM executions WHERE {_ORPHANED} ORDER BY created_at, id LIMIT :limit)
                    RETURNING *""",
                params,
            ).fetchall()

        # RETURNING gives no order guarantee.
        return sorted(map(rows.execution_from, self._write(write)), key=lambda e: (e.created_at, e.id))

    def count_queued(self) -> int:
        return self._db.read("SELECT count(*) AS n FROM executions WHERE status = 'queued'")[0]["n"]

    def queued_unowned(self, *, created_before: datetime, limit: int) -> list[str]:
        check_limit(limit)
        found = self._db.read(
            "SELECT id FROM executions WHERE status = 'queued' AND owner IS NULL AND created_at < ?"
            " ORDER BY created_at, id LIMIT ?",
            (to_ts(created_before), limit),
        )
        return [row["id"] for row in found]

    def purge_executions(self, *, before: datetime, limit: int | None = None) -> int:
        if limit is None:
            def write(conn: sqlite3.Connection) -> int:
                sql = "DELETE FROM executions WHERE status NOT IN ('queued', 'running') AND created_at < ?"
                return conn.execute(sql, (to_ts(before),)).rowcount

            return self._write(write)
        check_limit(limit)
        # The batch is found by a read, which takes no lock: the write lock is held only to delete the
        # rows by primary key (and their idempotency keys, by cascade), never for a scan of the table.
        found = self._db.read("SELECT id FROM executions WHERE status NOT IN ('queued', 'running')"
                              " AND created_at < ? ORDER BY created_at, id LIMIT ?", (to_ts(before), limit))
        if not found:
            return 0
        ids = json.dumps([row["id"] for row in found])

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM executions WHERE status NOT IN ('queued', 'running')"
                                " AND id IN (SELECT value FROM json_each(?))", (ids,)).rowcount

        return self._write(delete)

    # --- process registry --------------------------------------------------------------------------
    def heartbeat(self, worker: WorkerRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workers (id, host, pid, heartbeat_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
                " SET host = excluded.host, pid = excluded.pid, heartbeat_at = excluded.heartbeat_at",
                (worker.id, worker.host, worker.pid, to_ts(worker.heartbeat_at)),
            )

        self._write(write)

    def list_workers(self) -> list[WorkerRecord]:
        return [rows.worker_from(row) for row in self._db.read("SELECT * FROM workers ORDER BY id")]

    def remove_worker(self, worker_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

        self._write(write)

    # --- rate limiting -------------------------------------------------------------------------------
    def take_tokens(self, bucket: str, *, want: int, rate: float, burst: float, now: datetime) -> tuple[int, float]:
        def write(conn: sqlite3.Connection) -> tuple[int, float]:
            row = _one(conn, "SELECT tokens, updated_at FROM rate_buckets WHERE bucket = ?", (bucket,))
            current = Bucket(row["tokens"], from_ts(row["updated_at"])) if row else None
            state, taken, wait = take_from_bucket(current, want=want, rate=rate, burst=burst, now=now)
            conn.execute(
                "INSERT INTO rate_buckets (bucket, tokens, updated_at) VALUES (?, ?, ?) ON CONFLICT (bucket)"
                " DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                (bucket, state.tokens, to_ts(state.updated_at)),
            )
            return taken, wait

        return self._write(write)

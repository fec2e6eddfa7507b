"""PostgreSQL-only behaviour: migrations (twice, and from two processes at once), the pool across a fork,
errors that never show the password, an unreachable server, what the columns hold, row locks."""
from __future__ import annotations

import logging
import multiprocessing
import time
from datetime import datetime, timedelta

import psycopg
import pytest

from app.models import StepRecord, StepStatus
from app.store import PostgresStore, StoreError, create_store
from app.store._pg_db import MIGRATIONS
from tests.conftest import build_app
from tests.serverproc import free_port
from tests.test_store_races import run_processes
from tests.test_store_sqlite import PROCESS_TIMEOUT, T0, in_threads, queued, seed_workflow, wait_until

PASSWORD = "hunter2-s3cret"


@pytest.fixture
def store(postgres_url):
    backend = PostgresStore(postgres_url, pool_size=2)
    backend.init_schema()
    yield backend
    backend.shutdown()


def closed_port_url(**query: str) -> str:
    options = "&".join(f"{key}={value}" for key, value in query.items())
    return f"postgresql://ipaas:{PASSWORD}@127.0.0.1:{free_port()}/ipaas" + (f"?{options}" if options else "")


def backend_pid(store: PostgresStore) -> int:
    return store._db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]


# --- migrations --------------------------------------------------------------------------------------
def test_init_schema_twice_applies_each_migration_once(store, postgres_url):
    seed_workflow(store)
    store.init_schema()
    other = PostgresStore(postgres_url, pool_size=1)
    try:
        other.init_schema()
    finally:
        other.shutdown()
    versions = [row["version"] for row in store._db.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [migration.version for migration in MIGRATIONS]
    assert store.get_workflow(None, "wf_1").name == "n"


def migrate(barrier, results, url: str) -> None:
    """Child process: run init_schema in a race with the other children."""
    store = create_store(url, pool_size=1)
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        store.init_schema()
        results.put("migrated")
    finally:
        store.shutdown()


@pytest.mark.slow
def test_processes_starting_at_once_migrate_one_after_the_other(postgres_url):
    assert run_processes(migrate, [(postgres_url,)] * 3) == ["migrated"] * 3
    store = PostgresStore(postgres_url, pool_size=1)
    try:
        versions = [row["version"] for row in store._db.query("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [migration.version for migration in MIGRATIONS]
    finally:
        store.shutdown()


# --- the pool across a fork --------------------------------------------------------------------------
def report_backend_pid(store: PostgresStore, results) -> None:
    results.put(backend_pid(store))


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python 3.12+ warns of fork with threads
def test_a_forked_child_opens_its_own_pool_and_leaves_the_parents_alone(store):
    parent_before = backend_pid(store)  # the parent's pool is open, with a connection in it
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=report_backend_pid, args=(store, results))
    child.start()
    child_pid = results.get(timeout=PROCESS_TIMEOUT)
    child.join(timeout=PROCESS_TIMEOUT)
    assert child.exitcode == 0
    assert child_pid != parent_before
    # The parent's sessions survived the child (nothing closed or used them from there).
    assert store._db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s", (parent_before,))[0]["n"] == 1
    seed_workflow(store)
    assert store.get_workflow(None, "wf_1") is not None


# --- errors ------------------------------------------------------------------------------------------
def test_an_unreachable_server_raises_store_error_without_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    unreachable = PostgresStore(closed_port_url(), pool_size=1, timeout=1.0)
    started = time.monotonic()
    for call in (unreachable.ping, unreachable.init_schema, lambda: unreachable.remove_worker("proc-a")):
        with pytest.raises(StoreError) as raised:
            call()
        assert PASSWORD not in str(raised.value)
        assert "127.0.0.1" in str(raised.value)
    assert time.monotonic() - started < 10
    unreachable.shutdown()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in unreachable.url and "***" in unreachable.url


@pytest.mark.parametrize("url", [
    f"postgresql://ipaas:{PASSWORD}@127.0.0.1:notaport/ipaas",
    f"postgres://ipaas:{PASSWORD}@127.0.0.1/ipaas?no_such_option=1",
])
def test_a_malformed_url_is_refused_without_the_password(url):
    with pytest.raises(ValueError) as refused:
        create_store(url)
    assert PASSWORD not in str(refused.value)


def test_create_store_selects_postgres_without_connecting():
    store = create_store(closed_port_url(), pool_size=3)
    assert isinstance(store, PostgresStore) and store._db.pool_size == 3
    assert isinstance(create_store(closed_port_url().replace("postgresql://", "postgres://")), PostgresStore)


def test_a_shut_down_store_raises_store_error(store):
    store.shutdown()
    with pytest.raises(StoreError, match="shut down"):
        store.ping()


def test_readyz_pings_postgres(store):
    app = build_app(store)
    assert app.test_client().get("/readyz").get_json()["checks"]["store"] == "ok"


def test_readyz_reports_an_unreachable_postgres_without_the_password(store):
    app = build_app(store)
    app.extensions["ipaas"].store = PostgresStore(closed_port_url(), pool_size=1, timeout=0.5)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["store"].startswith("unreachable: PostgreSQL at 127.0.0.1")
    assert PASSWORD not in response.get_data(as_text=True)
    app.extensions["ipaas"].store.shutdown()


# --- columns -----------------------------------------------------------------------------------------
def test_naive_timestamps_are_refused(store):
    with pytest.raises(ValueError):
        store.ensure_tenant("acme", tenant_id="tn_1", now=datetime(2024, 5, 1, 12, 0))


def test_times_are_timestamptz_and_come_back_in_utc(store):
    seed_workflow(store)
    column = store._db.query("SELECT pg_typeof(created_at)::text AS type FROM tenants")[0]["type"]
    assert column == "timestamp with time zone"
    assert store.get_workflow(None, "wf_1").created_at.utcoffset().total_seconds() == 0


def test_an_error_message_holding_nul_is_stored_with_a_replacement_character(store):
    workflow = seed_workflow(store)
    execution, _ = store.create_execution(queued(workflow.id, 1))
    store.claim_execution(execution.id, owner="proc-a", now=T0)
    store.finish_execution(execution.id, owner="proc-a", status="failed", attempts=1, now=T0, error="bad\x00byte")
    assert store.get_execution(None, execution.id).error == "bad\ufffdbyte"


def test_migration_0002_gives_existing_workflows_the_auto_scheme(postgres_url):
    """A database made by migration 1 alone (wave 1) gets `signature_scheme` 'auto' on its workflows."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(MIGRATIONS[0].script)
        conn.execute("""
            INSERT INTO schema_version VALUES (1, now());
            INSERT INTO tenants VALUES ('tn_1', 'acme', now());
            INSERT INTO users VALUES ('usr_1', 'tn_1', 'a@acme.example', 'a@acme.example', now());
            INSERT INTO workflows (id, tenant_id, user_id, name, trigger_type, action_type, config, enabled,
                                   secret, created_at, updated_at)
            VALUES ('wf_old', 'tn_1', 'usr_1', 'old', 'webhook', 'http_request', '{}', true, 'k', now(), now())""")
    store = PostgresStore(postgres_url, pool_size=1)
    try:
        store.init_schema()
        old = store.get_workflow(None, "wf_old")
        assert (old.signature_scheme, old.plain, old.steps[0].action_type) == ("auto", True, "http_request")
    finally:
        store.shutdown()


# --- row locks ---------------------------------------------------------------------------------------
def lock_waiters(conn: psycopg.Connection) -> int:
    """How many sessions of this database wait for a lock now."""
    return conn.execute("SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()[0]


def test_a_step_checkpoint_waits_for_a_racing_hand_over_and_then_records_nothing(store, postgres_url):
    """record_step's owner check holds while it writes: a transaction moving the execution to another owner
    makes it wait, and once that commits the checkpoint finds the execution no longer its own."""
    execution, _ = store.create_execution(queued(seed_workflow(store).id, 1))
    store.claim_execution(execution.id, owner="proc-a", now=T0)
    record = StepRecord("main", 0, StepStatus.SUCCEEDED, attempts=1)
    with psycopg.connect(postgres_url, autocommit=True) as watcher, psycopg.connect(postgres_url) as other:
        other.execute("UPDATE executions SET status = 'queued', owner = 'proc-b' WHERE id = %s", (execution.id,))
        threads, outcomes = in_threads({"record": lambda: store.record_step(execution.id, owner="proc-a",
                                                                            step=record)})
        wait_until(lambda: lock_waiters(watcher) == 1)
        other.commit()
    threads["record"].join(PROCESS_TIMEOUT)
    assert outcomes == {"record": False}
    assert store.list_steps(None, [execution.id]) == {execution.id: []}


def test_a_purge_batch_skips_rows_another_transaction_holds(store, postgres_url):
    workflow = seed_workflow(store)
    ids = []
    for number in (1, 2, 3):
        execution, _ = store.create_execution(queued(workflow.id, number))
        store.claim_execution(execution.id, owner="proc-a", now=T0)
        store.finish_execution(execution.id, owner="proc-a", status="succeeded", attempts=1, now=T0)
        ids.append(execution.id)
    before = T0 + timedelta(hours=1)
    with psycopg.connect(postgres_url) as other:
        other.execute("SELECT id FROM executions WHERE id = %s FOR UPDATE", (ids[0],))
        assert store.purge_executions(before=before, limit=2) == 2  # the oldest is held: not waited for
        left = store.list_executions(None, limit=10).items
        assert [e.id for e in left] == [ids[0]]
    assert store.purge_executions(before=before, limit=2) == 1

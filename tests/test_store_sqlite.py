"""SQLite-only behaviour: pragmas, migrations, error mapping, group commit. Races between threads and
processes, which every database backend must win, are in test_store_races.py."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from app.models import Execution, ExecutionStatus, Step, User, Workflow, new_id
from app.store import DuplicateError, MemoryStore, SqliteStore, StoreError, create_store, migrations
from app.store._sqlite_db import MIGRATIONS

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
PROCESS_TIMEOUT = 60


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "nested" / "dir" / "ipaas.sqlite3")


@pytest.fixture
def store(db_path):
    sqlite_store = SqliteStore(db_path)
    sqlite_store.init_schema()
    yield sqlite_store
    sqlite_store.shutdown()


def seed_workflow(store: SqliteStore) -> Workflow:
    tenant = store.ensure_tenant("acme", tenant_id="tn_1", now=T0)
    user = store.create_user(User(id="usr_1", tenant_id=tenant.id, email="a@x.test", created_at=T0))
    return store.create_workflow(Workflow(id="wf_1", tenant_id=tenant.id, user_id=user.id, name="n",
                                          trigger_type="webhook", action_type="http_request",
                                          config={"url": "https://x.test"}, enabled=True, created_at=T0,
                                          updated_at=T0))


def queued(workflow_id: str, number: int, owner: str | None = None) -> Execution:
    created_at = T0 + timedelta(milliseconds=number)
    return Execution(id=new_id("ex", created_at), tenant_id="tn_1", workflow_id=workflow_id,
                     status=ExecutionStatus.QUEUED, trigger="webhook", payload={"n": number},
                     created_at=created_at, owner=owner)


# --- setup and pragmas -----------------------------------------------------------------------------
def test_connections_use_wal_foreign_keys_and_durable_commits(store):
    names = ("journal_mode", "foreign_keys", "synchronous")
    expected = {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 2}
    assert {name: store._db.read(f"PRAGMA {name}")[0][0] for name in names} == expected
    # The writer's own connection too.
    assert store._write(lambda conn: {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in names}) \
        == expected


def test_synchronous_mode_is_configurable_and_checked(db_path):
    relaxed = SqliteStore(db_path, synchronous="normal")
    assert relaxed._db.read("PRAGMA synchronous")[0][0] == 1
    relaxed.close()
    with pytest.raises(ValueError):
        SqliteStore(db_path, synchronous="FULL; DROP TABLE executions")


def test_init_schema_is_idempotent_and_records_the_version(store, db_path):
    seed_workflow(store)
    store.init_schema()
    SqliteStore(db_path).init_schema()
    recorded = [row[0] for row in store._db.read("SELECT version FROM schema_version ORDER BY version")]
    assert recorded == [migration.version for migration in MIGRATIONS]
    assert store.get_workflow(None, "wf_1").name == "n"


def test_migration_0002_gives_existing_workflows_the_auto_scheme(tmp_path):
    """A database made by migration 1 alone (wave 1) gets `signature_scheme` 'auto' on its workflows, and
    (0003) they read as one step `main`."""
    db_path = str(tmp_path / "wave1.sqlite3")
    conn = sqlite3.connect(db_path)
    conn.executescript(migrations.load("sqlite")[0].script)
    conn.executescript("""
        INSERT INTO schema_version VALUES (1, '2024-01-01T00:00:00.000000+00:00');
        INSERT INTO tenants VALUES ('tn_1', 'acme', '2024-01-01T00:00:00.000000+00:00');
        INSERT INTO users VALUES ('usr_1', 'tn_1', 'a@acme.example', 'a@acme.example',
                                  '2024-01-01T00:00:00.000000+00:00');
        INSERT INTO workflows (id, tenant_id, user_id, name, trigger_type, action_type, config, enabled, secret,
                               created_at, updated_at)
        VALUES ('wf_old', 'tn_1', 'usr_1', 'old', 'webhook', 'http_request', '{}', 1, 'k',
                '2024-01-01T00:00:00.000000+00:00', '2024-01-01T00:00:00.000000+00:00');""")
    conn.close()
    store = SqliteStore(db_path)
    try:
        store.init_schema()
        assert store.get_workflow(None, "wf_old").signature_scheme == "auto"
        assert store.get_workflow(None, "wf_old").steps == (Step("main", "http_request", {}),)
    finally:
        store.close()
    with sqlite3.connect(db_path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE workflows SET signature_scheme = 'nope'")


def test_naive_timestamps_are_refused(store):
    with pytest.raises(ValueError):
        store.ensure_tenant("acme", tenant_id="tn_1", now=datetime(2024, 5, 1, 12, 0))


def test_timestamps_are_stored_as_sortable_utc_text(store):
    store.ensure_tenant("acme", tenant_id="tn_1", now=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert store._db.read("SELECT created_at FROM tenants")[0][0] == "2024-05-01T12:00:00.000000+00:00"


# --- errors ----------------------------------------------------------------------------------------
def test_an_unreachable_database_raises_store_error(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    unreachable = SqliteStore(str(tmp_path / "not-a-dir" / "db.sqlite3"))
    with pytest.raises(StoreError):
        unreachable.ping()
    with pytest.raises(StoreError):  # the writer cannot open its connection either, and says so
        unreachable.remove_worker("proc-a")
    unreachable.shutdown()


def test_a_locked_database_raises_store_error(store, db_path):
    impatient = SqliteStore(db_path, busy_timeout_ms=50)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError):
            impatient.remove_worker("proc-a")
        blocker.execute("ROLLBACK")
        impatient.remove_worker("proc-a")  # the writer outlived the failed batch
        assert impatient.stats()["failed_commits"] == 1
    finally:
        blocker.close()
        impatient.shutdown()


def test_dangling_references_are_refused(store):
    with pytest.raises(ValueError):
        store.create_execution(queued("wf_missing", 1))
    assert store.list_executions(None, limit=10).items == []


# --- connections -----------------------------------------------------------------------------------
def test_close_reaps_connections_of_finished_threads(store):
    thread = threading.Thread(target=store.ping)
    thread.start()
    thread.join(timeout=PROCESS_TIMEOUT)
    store.ping()
    assert store._db.count() == 2
    store.close()
    assert store._db.count() == 0
    store.ping()  # reconnects on demand


def test_close_all_closes_other_threads_connections_and_they_reconnect(store):
    pinged, closed = threading.Event(), threading.Event()

    def ping_twice() -> None:
        store.ping()
        pinged.set()
        closed.wait(timeout=PROCESS_TIMEOUT)
        store.ping()
        store.close()

    thread = threading.Thread(target=ping_twice)
    thread.start()
    assert pinged.wait(timeout=PROCESS_TIMEOUT)
    store.close_all()
    assert store._db.count() == 0
    closed.set()
    thread.join(timeout=PROCESS_TIMEOUT)
    assert not thread.is_alive()


# --- group commit ----------------------------------------------------------------------------------
class Plug:
    """A write that holds the writer inside its transaction until released, so that the writes
    submitted meanwhile queue up and form the next batch together."""

    def __init__(self, store: SqliteStore) -> None:
        self.started, self.released = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=store._write, args=(self._hold,))
        self.thread.start()
        assert self.started.wait(timeout=PROCESS_TIMEOUT)

    def _hold(self, conn: sqlite3.Connection) -> None:
        self.started.set()
        assert self.released.wait(timeout=PROCESS_TIMEOUT)

    def release(self) -> None:
        self.released.set()
        self.thread.join(timeout=PROCESS_TIMEOUT)


def in_threads(calls: dict[str, Callable[[], object]]) -> tuple[dict[str, threading.Thread], dict[str, object]]:
    """Start one thread per call; each records its return value or exception under its name."""
    outcomes: dict[str, object] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        try:
            outcomes[name] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[name] = exc

    threads = {name: threading.Thread(target=run, args=(name, call)) for name, call in calls.items()}
    for thread in threads.values():
        thread.start()
    return threads, outcomes


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_concurrent_writes_share_commits(store):
    seed_workflow(store)
    before = store.stats()
    barrier = threading.Barrier(32)

    def create_50(thread_number: int) -> None:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        for n in range(50):
            store.create_execution(queued("wf_1", thread_number * 100 + n))

    threads = [threading.Thread(target=create_50, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PROCESS_TIMEOUT)
    after = store.stats()
    assert store._db.read("SELECT count(*) FROM executions")[0][0] == 1600
    assert after["writes"] - before["writes"] == 1600
    # Each thread waits for its commit before its next write, so one commit can hold up to 32 writes.
    assert after["commits"] - before["commits"] <= 1600 // 4
    assert after["largest_batch"] > 1 and after["failed_commits"] == 0 and after["queued"] == 0


def test_a_failing_write_does_not_affect_the_others_of_its_batch(store):
    workflow = seed_workflow(store)
    taken = store.create_execution(queued(workflow.id, 1))[0]
    plug = Plug(store)
    before = store.stats()
    threads, outcomes = in_threads({
        "user": lambda: store.create_user(User(id="usr_2", tenant_id="tn_1", email="b@x.test", created_at=T0)),
        "taken email": lambda: store.create_user(User(id="usr_3", tenant_id="tn_1", email="A@X.test",
                                                      created_at=T0)),
        # Writes its idempotency key, then fails on the taken id: the key must go too.
        "taken id": lambda: store.create_execution(taken, idempotency_key="evt-1"),
        "execution": lambda: store.create_execution(queued(workflow.id, 2), idempotency_key="evt-2")[0],
    })
    wait_until(lambda: store.stats()["queued"] == 4)
    plug.release()
    for thread in threads.values():
        thread.join(timeout=PROCESS_TIMEOUT)

    assert store.stats()["commits"] == before["commits"] + 2  # the plug's batch, then these four's
    assert store.stats()["largest_batch"] == 4
    assert isinstance(outcomes["taken email"], DuplicateError)
    assert isinstance(outcomes["taken id"], DuplicateError)
    assert outcomes["user"] == store.get_user_by_email("b@x.test")
    assert outcomes["execution"] == store.get_execution(None, outcomes["execution"].id)
    assert store.get_user_by_email("a@x.test").id == "usr_1"
    keys = store._db.read("SELECT key FROM idempotency_keys ORDER BY key")
    assert [row["key"] for row in keys] == ["evt-2"]


def test_writes_in_one_batch_see_each_other(store):
    workflow = seed_workflow(store)
    plug = Plug(store)
    threads, outcomes = in_threads({
        f"writer-{n}": lambda n=n: store.create_execution(queued(workflow.id, n), idempotency_key="evt-1")
        for n in range(5)
    })
    wait_until(lambda: store.stats()["queued"] == 5)
    plug.release()
    for thread in threads.values():
        thread.join(timeout=PROCESS_TIMEOUT)
    assert sorted(created for _, created in outcomes.values()) == [False, False, False, False, True]
    assert len({execution.id for execution, _ in outcomes.values()}) == 1


def test_shutdown_commits_queued_writes_then_refuses_writes(store):
    seed_workflow(store)
    plug = Plug(store)
    threads, outcomes = in_threads({"queued": lambda: store.create_execution(queued("wf_1", 1))[0]})
    wait_until(lambda: store.stats()["queued"] == 1)
    stopper = threading.Thread(target=store.shutdown)
    stopper.start()
    wait_until(lambda: store._committer._stopped)
    with pytest.raises(StoreError, match="store is shut down"):
        store.remove_worker("proc-a")
    assert stopper.is_alive()  # waiting for the plug's batch and the one queued behind it
    plug.release()
    stopper.join(timeout=PROCESS_TIMEOUT)
    threads["queued"].join(timeout=PROCESS_TIMEOUT)
    assert store.get_execution(None, outcomes["queued"].id) == outcomes["queued"]
    assert store._committer._conn is None  # the write connection is closed
    with pytest.raises(StoreError, match="store is shut down"):
        store.create_execution(queued("wf_1", 2))
    assert store.get_workflow(None, "wf_1") is not None  # reads still work


def test_a_write_cannot_write_from_inside_its_batch(store):
    with pytest.raises(RuntimeError, match="cannot itself write"):
        store._write(lambda conn: store.remove_worker("proc-a"))
    store.remove_worker("proc-a")  # the failed write left the lead free


class Interrupted(BaseException):
    pass


def test_a_caller_interrupted_while_waiting_passes_the_lead_on(store):
    """A signal handler may raise in a thread waiting for its batch (SystemExit in gunicorn's main
    thread): its write must not run, and the writes queued behind it must still commit."""
    seed_workflow(store)
    plug = Plug(store)

    def must_not_run(conn: sqlite3.Connection) -> None:
        raise AssertionError("an abandoned write ran")

    def interrupt(signum, frame) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # fires while this thread waits behind the plug
        with pytest.raises(Interrupted):
            store._write(must_not_run)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert store.stats()["queued"] == 0
    threads, outcomes = in_threads({"after": lambda: store.create_execution(queued("wf_1", 1))[0]})
    wait_until(lambda: store.stats()["queued"] == 1)
    plug.release()
    threads["after"].join(timeout=PROCESS_TIMEOUT)
    assert store.get_execution(None, outcomes["after"].id) == outcomes["after"]


def create_until_killed(path: str, report) -> None:
    """Child process: create executions from 4 threads forever, reporting each id once created."""
    store, lock = SqliteStore(path), threading.Lock()

    def create(thread_number: int) -> None:
        for n in range(10**9):
            created, _ = store.create_execution(queued("wf_1", thread_number * 10**6 + n))
            with lock:
                report.send(created.id)

    threads = [threading.Thread(target=create, args=(t,), daemon=True) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.slow
def test_every_write_reported_before_a_kill_is_on_disk(store, db_path):
    seed_workflow(store)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=create_until_killed, args=(db_path, sender))
    child.start()
    sender.close()
    reported: list[str] = []
    try:
        while len(reported) < 300:
            assert receiver.poll(PROCESS_TIMEOUT), "the child reported nothing"
            reported.append(receiver.recv())
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=PROCESS_TIMEOUT)
        while True:  # what the child sent before it died
            try:
                reported.append(receiver.recv())
            except EOFError:
                break
    finally:
        if child.is_alive():
            child.kill()
        receiver.close()
    assert child.exitcode == -signal.SIGKILL
    stored = {row["id"] for row in store._db.read("SELECT id FROM executions")}
    assert set(reported) <= stored


# --- create_store ----------------------------------------------------------------------------------
def test_create_store_resolves_sqlite_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = create_store("sqlite:///instance/ipaas.sqlite3")
    absolute = create_store(f"sqlite:///{tmp_path}/abs.sqlite3")
    assert isinstance(relative, SqliteStore) and relative.path == str(tmp_path / "instance" / "ipaas.sqlite3")
    assert absolute.path == str(tmp_path / "abs.sqlite3")
    assert isinstance(create_store("memory://"), MemoryStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://admin:hunter2@db/ipaas", "'mysql'"),
        ("sqlite:///", "file path"),
        ("sqlite://host/relative.db", "'sqlite'"),
    ],
)
def test_create_store_refuses_other_urls_without_echoing_secrets(url, message):
    with pytest.raises(ValueError, match=message) as refused:
        create_store(url)
    assert "hunter2" not in str(refused.value)


def test_writers_take_turns_through_the_handoff_lock(store, db_path):
    """Another process's writer holding the flock keeps this store's writes waiting until it lets go."""
    import fcntl

    workflow = seed_workflow(store)
    fd = os.open(f"{db_path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    done = threading.Event()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: (store.create_execution(queued(workflow.id, 1)), done.set()))
        writer.start()
        assert not done.wait(0.3) and store.stats()["queued"] == 0  # taken by the writer, blocked on the lock
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert done.wait(5)
        writer.join(5)
    finally:
        os.close(fd)
    assert len(store.list_executions(None, limit=10).items) == 1

"""SQLite connections for the store: one per thread for reads, a transaction helper, error translation,
migrations. Writes go through the store's group committer (see _group_commit), which opens its own
connection with `Connections.connect`."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from app.models import utcnow
from app.store import migrations
from app.store._sqlite_rows import to_ts
from app.store.base import DuplicateError, StoreError

# Add a file under app/store/migrations/sqlite/; never edit one that has shipped.
MIGRATIONS = migrations.load("sqlite")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

# Primary result codes meaning the database cannot be reached or written right now (503, try later);
# anything else (a syntax error, a missing table) is a bug and is raised as it is.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOTADB,
}
_DUPLICATE = {sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY}


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn driver errors into the store's: DuplicateError, StoreError, or ValueError for a dangling id."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorcode in _DUPLICATE:
            raise DuplicateError(str(exc)) from exc
        if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
            raise ValueError("the record refers to a tenant, user or workflow that does not exist") from exc
        raise
    except sqlite3.DatabaseError as exc:
        if (exc.sqlite_errorcode or 0) & 0xFF in _UNAVAILABLE:
            raise StoreError(str(exc)) from exc
        raise


def one(conn: sqlite3.Connection, sql: str, params: Any = ()) -> sqlite3.Row | None:
    """The first row of a query, or None."""
    # fetchall, not fetchone: an unfinished statement would block the COMMIT.
    found = conn.execute(sql, params).fetchall()
    return found[0] if found else None


class Connections:
    """One lazily opened connection per thread, all tracked so that they can be closed (the write
    connection, made by `connect` too, is its own and is not tracked here)."""

    def __init__(self, path: str, *, synchronous: str, busy_timeout_ms: int) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}")
        self.path = path
        # Both end up in PRAGMAs, which take no bound parameters: hence the checks.
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[sqlite3.Connection, threading.Thread] = {}

    def connect(self) -> sqlite3.Connection:
        """Open a new connection with the store's pragmas; the caller owns it."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database directory: {exc}") from exc
        # check_same_thread=False only so that connections of ended threads can be closed from another.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def current(self) -> sqlite3.Connection:
        """Return the calling thread's connection, opening it if needed."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn not in self._open:  # never opened, or closed by close_all()
            conn = self._local.conn = self.connect()
            with self._lock:
                self._open[conn] = threading.current_thread()
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction of the calling thread's connection, locked up front;
        commit, or roll back if it raises. Only for init_schema: every other write goes to the group committer."""
        with translated_errors():
            conn = self.current()
            # IMMEDIATE: writers queue on the lock at BEGIN instead of deadlocking on a later upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself after some I/O errors
                    conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """Run one query outside any transaction and return its rows."""
        with translated_errors():
            return self.current().execute(sql, params).fetchall()

    def close(self, which: Callable[[threading.Thread], bool]) -> None:
        """Close the connections of the threads for which `which` is true."""
        with self._lock:
            closing = [conn for conn, thread in self._open.items() if which(thread)]
            for conn in closing:
                del self._open[conn]
        for conn in closing:
            conn.close()

    def count(self) -> int:
        """Return how many connections are open."""
        return len(self._open)


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Run the migrations newer than the database's version; call inside a write transaction."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchall()
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")} if exists else set()
    for migration in MIGRATIONS:
        if migration.version not in applied:
            # executescript() would commit the caller's transaction, so run the statements one by one.
            for statement in _statements(migration.script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                         (migration.version, to_ts(utcnow())))


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip() and not buffer.strip().startswith("--"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")

"""PostgreSQL connections for the store: a psycopg_pool opened in the process that uses it, error
translation, a URL that never shows its password, and migrations under an advisory lock.

What we rely on from psycopg_pool 3.2+/3.3 (read in its docs and source, `psycopg_pool/pool.py`):
- `ConnectionPool(open=False)` starts no thread and no connection; `open()` starts its worker threads and
  fills `min_size` connections in the background (`wait=False`), so opening never blocks on the server.
- `getconn`/`connection()` wait up to `timeout` seconds for a connection, then raise `PoolTimeout` (an
  `OperationalError`): with the server down, a caller waits that long and gets a StoreError.
- A connection handed back broken (the server restarted or killed it) is discarded and replaced in the
  background. One that broke while idle in the pool is only noticed if `check` is given: we pass
  `ConnectionPool.check_connection` (an empty query on checkout, one round trip), so after a server
  restart callers get fresh connections instead of one failure per stale connection.
- A failed connection attempt is retried with exponential backoff for up to `reconnect_timeout`
  (300 s by default), after which the pool gives that slot up until a client asks for more; `max_idle`
  (600 s) closes connections above `min_size` that stayed unused that long.
- Connections and pools cannot cross a fork (libpq shares the socket with the parent; psycopg's
  maintainer in psycopg/psycopg#395 and #651): the pool is opened lazily by the first call in a process,
  and a pool inherited from a parent is left untouched (never closed, which would end the parent's
  sessions) and replaced by a new one.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from app.models import utcnow
from app.store import migrations
from app.store.base import DuplicateError, StoreError

# Add a file under app/store/migrations/postgres/; never edit one that has shipped.
MIGRATIONS = migrations.load("postgres")

# pg_advisory_xact_lock key held while migrating: two processes starting at once take turns.
MIGRATION_LOCK = 0x69_70_61_61_73  # "ipaas"

DEFAULT_POOL_SIZE = 10
DEFAULT_TIMEOUT = 5.0  # seconds a caller waits for a connection before StoreError
CONNECT_TIMEOUT = 5  # libpq connect_timeout (whole seconds) unless the URL sets one

_open_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _open_lock
    _open_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def redact(url: str) -> str:
    """Return `url` with its password replaced by '***' (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Database:
    """The store's pool of connections to one database (autocommit: a statement is its own
    transaction unless run in `transaction()`), rows as dicts, session time zone UTC."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: float = DEFAULT_TIMEOUT) -> None:
        if pool_size < 1:
            raise ValueError(f"the pool size must be at least 1, got {pool_size!r}")
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError for a port that is not a number
            options = psycopg.conninfo.conninfo_to_dict(url)
        except (ValueError, psycopg.Error) as exc:
            # libpq's own message may quote the URL: only say what is wrong in general terms.
            raise ValueError(f"not a valid PostgreSQL URL ({type(exc).__name__}): {redact(url)}") from None
        # Both forms of the password, as given and as decoded, are scrubbed from messages.
        self._secrets = [s for s in {options.get("password"), urlsplit(url).password} if s]
        self._url, self.pool_size, self.timeout = url, pool_size, timeout
        self._kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "connect_timeout" not in options:
            self._kwargs["connect_timeout"] = CONNECT_TIMEOUT
        self._pool: ConnectionPool | None = None
        self._pid = 0
        self._inherited: list[ConnectionPool] = []  # kept referenced: collecting them would close sockets
        self._closed = False

    @property
    def url(self) -> str:
        """The URL without its password."""
        return redact(self._url)

    def _current_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with _open_lock:
            if self._closed:
                raise StoreError("the store is shut down")
            if self._pool is not None and self._pid != os.getpid():
                self._inherited.append(self._pool)  # the parent's: neither used nor closed here
                self._pool = None
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._url, kwargs=self._kwargs, min_size=min(2, self.pool_size), max_size=self.pool_size,
                    timeout=self.timeout, check=ConnectionPool.check_connection, configure=_configure,
                    name=f"ipaas-{os.getpid()}", open=False)
                self._pool.open(wait=False)
                self._pid = os.getpid()
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection of this process's pool for the block, driver errors translated."""
        with self.errors():
            with self._current_pool().connection() as conn:
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Run the block in one transaction: committed when it ends, rolled back if it raises."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one statement as its own transaction and return its rows (none for a statement without)."""
        with self.connection() as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, params: Any = None) -> int:
        """Run one statement as its own transaction and return how many rows it changed."""
        with self.connection() as conn:
            return conn.execute(sql, params).rowcount

    def close(self) -> None:
        """Close this process's pool for good (later calls raise StoreError)."""
        with _open_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver errors into the store's; never let the password through."""
        try:
            yield
        except pg_errors.UniqueViolation as exc:
            raise DuplicateError(self._scrub(exc)) from None
        except pg_errors.ForeignKeyViolation:
            raise ValueError("the record refers to a tenant, user or workflow that does not exist") from None
        except (psycopg.OperationalError, psycopg.InterfaceError, pg_errors.ReadOnlySqlTransaction) as exc:
            # Connection lost or refused, pool timeout or closed, admin shutdown, serialization failure
            # or deadlock, a read-only standby: the caller may try again later (503, engine retry).
            raise StoreError(f"PostgreSQL at {urlsplit(self.url).hostname or 'localhost'}: "
                             f"{self._scrub(exc)}") from None

    def _scrub(self, exc: BaseException) -> str:
        message = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def apply_migrations(db: Database) -> None:
    """Apply every migration not recorded yet, all in one transaction under an advisory lock, so two
    processes starting at once take turns and the second finds nothing left to do."""
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS found").fetchone()["found"]
        applied = {row["version"] for row in conn.execute("SELECT version FROM schema_version")} if exists else set()
        for migration in MIGRATIONS:
            if migration.version not in applied:
                conn.execute(migration.script)  # no parameters, so several statements in one go
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                             (migration.version, utcnow()))

"""Group commit: one writer thread per store runs the writes of every thread, many per transaction.

With synchronous=FULL each COMMIT waits for an fsync, and SQLite lets one writer in at a time, so a
transaction per write caps the store at one fsync per write. Here callers hand their write to the
writer as a function of a connection and block; the writer takes whatever is queued (up to
MAX_BATCH: batches form by themselves while the previous COMMIT's fsync runs, with no added delay)
and runs it as

    BEGIN IMMEDIATE; SAVEPOINT op; <write 1>; RELEASE op; SAVEPOINT op; <write 2>; ...; COMMIT

A write that raises is rolled back to its savepoint alone and gets its exception; the others commit.
Each caller is answered only once COMMIT has returned, so what it sees is what a transaction of its
own would give: on return its change is on disk (as durable as the `synchronous` pragma makes it) and
visible to every reader; if the transaction as a whole fails (BEGIN busy past busy_timeout, an I/O
error at COMMIT) every write of the batch gets a StoreError and none is claimed as committed.

Writes of a batch run one after the other in one transaction, so each sees the changes of those
before it, exactly as if they had been separate transactions in that order.

Not fork-safe: the writer's thread and connection belong to the process that started them. Under
gunicorn the app, hence the store, is created in each worker after the fork (preload_app = False).
"""
from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, TypeVar

from app.store._sqlite_db import translated_errors
from app.store.base import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 256  # writes per transaction at most: bounds how long one COMMIT makes its callers wait
_STOP = object()  # queued by stop(), always last: the writer finishes what is before it, then exits
_ALIVE_CHECK_S = 1.0  # how often a waiting caller makes sure the writer is still there


class _TransactionLost(Exception):
    """SQLite rolled the whole transaction back by itself after a write failed (I/O error, disk full)."""


class _Write(Generic[T]):
    """One caller's write, its outcome, and the event its caller waits on."""

    __slots__ = ("abandoned", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.abandoned = False  # its caller got a StoreError: it must never run


class GroupCommitter:
    """The writer thread of one store and its connection, started by the first write."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = MAX_BATCH,
                 handoff_path: str | None = None) -> None:
        self._connect = connect  # opens a connection with the store's pragmas
        self._handoff_path = handoff_path
        self._handoff_fd: int | None = None
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders write() against stop(): no write is queued after _STOP
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None  # the writer thread's alone
        self._counts = {"commits": 0, "writes": 0, "failed_commits": 0, "largest_batch": 0}

    # --- callers' side -------------------------------------------------------------------------
    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` inside a write transaction; return its result once that has committed, or
        raise its exception (translated: DuplicateError, StoreError, ValueError...)."""
        write = _Write(fn)
        with self._lock:
            if self._stopped:
                raise StoreError("store is shut down")
            if threading.current_thread() is self._thread:
                raise RuntimeError("a write of the store cannot itself write: it would wait for itself")
            if not self._writer_alive():  # the first write (or the writer died of a bug)
                self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
                self._thread.start()
            self._queue.put(write)
        while not write.done.wait(_ALIVE_CHECK_S):
            # Only a bug can kill the writer (it catches everything): then answer rather than hang.
            with self._lock:  # a writer started after this sees `abandoned`
                if not self._writer_alive() and not write.done.is_set():  # in this order: no race
                    write.abandoned = True
                    raise StoreError("the store's writer stopped unexpectedly")
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _writer_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Refuse new writes; the writer commits those already queued, closes its connection and exits.
        Does not wait: see join()."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the writer to exit after stop(); False if it is still running after `timeout`."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def stats(self) -> dict[str, int]:
        """Committed transactions and the writes they held, failed transactions, the largest batch,
        and how many writes are waiting for the writer."""
        return {**self._counts, "queued": self._queue.qsize()}

    # --- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    self._commit_batch(batch)
        finally:
            self._discard_connection()
            if self._handoff_fd is not None:
                os.close(self._handoff_fd)
                self._handoff_fd = None

    def _take(self) -> tuple[list[_Write[Any]], bool]:
        """Wait for a write, then take every write already queued behind it, up to the cap; also
        tell whether stop() was reached."""
        batch: list[_Write[Any]] = []
        item = self._queue.get()
        while item is not _STOP:
            if not item.abandoned:
                batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _commit_batch(self, batch: list[_Write[Any]]) -> None:
        """Run and commit the batch, then answer every caller in it, whatever happens."""
        try:
            with translated_errors():
                self._transaction(batch)
        except BaseException as exc:  # the writer must outlive anything, and answer everyone
            self._counts["failed_commits"] += 1
            if isinstance(exc, (StoreError, _TransactionLost)):
                log.warning("a batch of %d writes was not committed: %s", len(batch), exc)
            else:
                log.exception("a batch of %d writes was not committed", len(batch))
            self._roll_back()
            for write in batch:
                error = StoreError(f"the write was not committed: {exc}")
                error.__cause__ = exc
                write.result, write.error = None, error
        else:
            self._counts["commits"] += 1
            self._counts["writes"] += len(batch)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
        finally:
            for write in batch:
                write.done.set()

    def _transaction(self, batch: list[_Write[Any]]) -> None:
        """BEGIN, each write in its own savepoint, COMMIT; raise if the transaction as a whole failed."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        with self._handoff():
            # IMMEDIATE: take the write lock up front (other processes' writers queue on it here).
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                conn.execute("SAVEPOINT op")
                try:
                    with translated_errors():
                        write.result = write.fn(conn)
                except BaseException as exc:  # the caller's to raise, as it would have in its own thread
                    write.error = exc
                    if not conn.in_transaction:
                        raise _TransactionLost(f"SQLite rolled the transaction back: {exc}") from exc
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            conn.execute("COMMIT")

    @contextmanager
    def _handoff(self) -> Iterator[None]:
        """Hold an exclusive flock on a side file around the transaction. Writers of other processes
        then wait in the kernel and wake the moment this one commits, instead of in SQLite's busy
        handler, which sleeps 1 to 100 ms between tries and starves the loser (measured in bench/)."""
        if self._handoff_path is None:
            yield
            return
        if self._handoff_fd is None:
            self._handoff_fd = os.open(self._handoff_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._handoff_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._handoff_fd, fcntl.LOCK_UN)

    def _roll_back(self) -> None:
        """End a failed transaction; a connection that cannot even roll back is replaced."""
        conn = self._conn
        try:
            if conn is not None and conn.in_transaction:  # SQLite rolls back by itself after some errors
                conn.execute("ROLLBACK")
        except Exception:
            log.exception("rollback failed: reopening the writer's connection")
            self._discard_connection()

    def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("closing the writer's connection failed")

"""Group commit: the writes of every thread of a process share transactions, one fsync per batch.

With synchronous=FULL each COMMIT waits for an fsync, and SQLite lets one writer in at a time, so a
transaction per write caps the store at one fsync per write. Here a caller queues its write (a
function of a connection) and, unless another thread is committing, leads: it takes every write
queued (up to MAX_BATCH, its own included) and runs them on the store's one write connection as

    BEGIN IMMEDIATE; SAVEPOINT op; <write 1>; RELEASE op; SAVEPOINT op; <write 2>; ...; COMMIT

then wakes their callers. Writes that arrive meanwhile wait; when the leader is done it hands the
lead to the oldest of them, whose batch is everything queued by then. So batches form by themselves
while a COMMIT's fsync runs, with no added delay, and a write that overlaps no other costs no thread
switch at all. (A dedicated writer thread costs two thread switches per write: a create_execution
alone took 464 µs of CPU that way against 412 µs this way, measured in bench/RESULTS.md.)

A write that raises is rolled back to its savepoint alone and gets its exception; the others commit.
Each caller is answered only once COMMIT has returned, so what it sees is what a transaction of its
own would give: on return its change is on disk (as durable as the `synchronous` pragma makes it) and
visible to every reader; if the transaction as a whole fails (BEGIN busy past busy_timeout, an I/O
error at COMMIT) every write of the batch gets a StoreError and none is claimed as committed.

Writes of a batch run one after the other in one transaction, so each sees the changes of those
before it, exactly as if they had been separate transactions in that order.

Not fork-safe: the connection belongs to the process that opened it. Under gunicorn the app, hence
the store, is created in each worker after the fork (preload_app = False).
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, TypeVar

from app import logutils
from app.store._sqlite_db import translated_errors
from app.store.base import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 256  # writes per transaction at most: bounds how long one COMMIT makes its callers wait


class _TransactionLost(Exception):
    """SQLite rolled the whole transaction back by itself after a write failed (I/O error, disk full)."""


class _Write(Generic[T]):
    """One caller's write, its outcome, and the event its caller waits on: set once the write is
    done, or earlier to hand its caller the lead."""

    __slots__ = ("done", "error", "fn", "result", "wake")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()


class GroupCommitter:
    """The write connection of one store and the queue of writes waiting for it."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = MAX_BATCH,
                 handoff_path: str | None = None) -> None:
        self._connect = connect  # opens a connection with the store's pragmas
        self._handoff_path = handoff_path
        self._handoff_fd: int | None = None
        self._max_batch = max_batch
        self._lock = threading.Lock()  # guards the queue, _leading and _stopped
        self._idle = threading.Condition(self._lock)  # notified when nobody leads any more
        self._queue: deque[_Write[Any]] = deque()
        self._leading = False  # a thread runs a batch, or has been handed the lead
        self._stopped = False
        self._in_batch = threading.local()
        self._conn: sqlite3.Connection | None = None  # the leader's alone
        self._counts = {"commits": 0, "writes": 0, "failed_commits": 0, "largest_batch": 0}

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` inside a write transaction; return its result once that has committed, or
        raise its exception (translated: DuplicateError, StoreError, ValueError...)."""
        if getattr(self._in_batch, "active", False):
            raise RuntimeError("a write of the store cannot itself write: it would wait for itself")
        write = _Write(fn)
        with self._lock:
            if self._stopped:
                raise StoreError("store is shut down")
            self._queue.append(write)
            leads, self._leading = not self._leading, True
        if not leads:
            try:
                write.wake.wait()
            except BaseException:  # a signal handler raised in this thread (SystemExit in gunicorn's main)
                self._abandon(write)
                raise
        if not write.done:  # leading from the start, or handed the lead: the batch holds this write
            self._lead()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _abandon(self, write: _Write[Any]) -> None:
        """Take back a write whose caller stopped waiting, passing on the lead it may have been given."""
        with self._lock:
            if write in self._queue:  # not taken by a leader: it never runs
                handed_lead = write.wake.is_set()
                self._queue.remove(write)
                if handed_lead:
                    self._pass_lead()

    def _lead(self) -> None:
        """Run one batch of the oldest queued writes, then hand the lead to the next one waiting."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
        self._in_batch.active = True
        try:
            self._commit_batch(batch)
        finally:
            self._in_batch.active = False
            with self._lock:
                self._pass_lead()

    def _pass_lead(self) -> None:
        """Wake the oldest waiting write to lead, or let the lead go; call with the lock held."""
        if self._queue:
            self._queue[0].wake.set()
        else:
            self._leading = False
            self._idle.notify_all()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new writes, wait up to `timeout` s for those queued to commit, close the connection.
        False if writes were still running after `timeout` (the connection is then left open)."""
        with self._lock:
            self._stopped = True
            if not self._idle.wait_for(lambda: not self._leading, timeout):
                return False
        self._close()
        return True

    def stats(self) -> dict[str, int]:
        """Committed transactions and the writes they held, failed transactions, the largest batch,
        and how many writes are waiting for their batch."""
        return {**self._counts, "queued": len(self._queue)}

    # --- the leader's side ---------------------------------------------------------------------
    def _commit_batch(self, batch: list[_Write[Any]]) -> None:
        """Run and commit the batch, then answer every caller in it, whatever happens."""
        try:
            with translated_errors():
                self._transaction(batch)
        except BaseException as exc:  # every caller must be answered, whatever went wrong
            self._counts["failed_commits"] += 1
            if isinstance(exc, (StoreError, _TransactionLost)):
                # An outage fails every batch: one summarised line per error (logutils.RepeatFilter).
                log.warning("a batch of writes was not committed: %s", exc,
                            extra=logutils.repeated(str(exc), writes=len(batch)))
            else:
                log.exception("a batch of %d writes was not committed", len(batch))
            self._roll_back()
            for write in batch:
                error = StoreError(f"the write was not committed: {exc}")
                error.__cause__ = exc
                write.result, write.error = None, error
            if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: the leader's own to raise
                raise
        else:
            self._counts["commits"] += 1
            self._counts["writes"] += len(batch)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
        finally:
            for write in batch:
                write.done = True
                write.wake.set()

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
        """Hold an exclusive flock on a side file around the transaction. Leaders of other processes
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
            log.exception("rollback failed: reopening the write connection")
            self._discard_connection()

    def _close(self) -> None:
        self._discard_connection()
        if self._handoff_fd is not None:
            os.close(self._handoff_fd)
            self._handoff_fd = None

    def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("closing the write connection failed")

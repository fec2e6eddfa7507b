#!/usr/bin/env python3
"""Micro-benchmark: small SQLite write transactions from 2 processes x 8 threads, as the service makes
them (WAL, synchronous=FULL, busy_timeout 5 s, BEGIN IMMEDIATE ... COMMIT, one connection per thread),
against two ways of taking the lock that avoid SQLite's sleeping busy handler within a process.

    .venv/bin/python bench/sqlite_writes.py [--seconds 5] [--processes 2] [--threads 8] [--sync FULL] [--inside N]
                                            [--think MS] [--strategies busy,lock,group,group+flock]

--inside N does N JSON round trips of the row (Python work, holding the GIL) between BEGIN IMMEDIATE and
COMMIT, as the store's transactions do (read a row, build a dataclass, compute, write): the SQLite lock is then
held while the writer also waits for the GIL, which the other threads of its process compete for.

  busy   every thread: BEGIN IMMEDIATE; INSERT; COMMIT. A thread that finds the lock taken sleeps in
         SQLite's busy handler (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms ...) and is not woken
         when the lock frees: the lock idles while writers sleep, and some wait out busy_timeout.
  lock   the same under one threading.Lock per process: threads of a process queue on a lock that
         wakes them; only the 2 processes meet in the busy handler.
  group  one writer thread per process commits whatever the threads queued, up to 64 INSERTs per
         transaction (one fsync for the batch); each thread waits for its own commit.
  group+flock  the same, the writer holding an exclusive flock() on a side file from BEGIN to COMMIT:
         the two processes' writers hand the lock over through the kernel, which wakes the waiter at
         once, instead of meeting in SQLite's sleeping busy handler.

--think MS makes every thread wait MS ms between its writes (the rest of a request's or a job's work).

Prints one markdown line per strategy: writes/s, latency p50/p99/max (ms), "database is locked" errors."""
from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import queue
import sqlite3
import tempfile
import threading
import time

ROW = os.urandom(300).hex()  # ~600 bytes, like an execution's payload
DOC = {"event": "invoice.paid", "data": {"id": ROW[:32], "lines": [{"sku": str(i), "qty": i} for i in range(8)]}}
INSIDE = [0]  # JSON round trips inside each transaction (--inside)
THINK = [0.0]  # seconds each thread waits between its writes (--think)


def connect(path: str, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    return conn


def write(conn: sqlite3.Connection, rows: int = 1) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(rows):
        for _ in range(INSIDE[0]):
            json.loads(json.dumps(DOC))
        conn.execute("INSERT INTO t (body, at) VALUES (?, ?)", (ROW, time.time()))
    conn.execute("COMMIT")


def worker(path: str, strategy: str, threads: int, seconds: float, sync: str, out: multiprocessing.Queue,
           inside: int, think: float) -> None:
    INSIDE[0], THINK[0] = inside, think
    latencies: list[float] = []
    errors = [0]
    record = threading.Lock()
    lock = threading.Lock()
    pending: queue.Queue = queue.Queue()
    stop_at = time.monotonic() + seconds

    def writer() -> None:  # the group strategies' committer
        conn = connect(path, sync)
        side = open(path + ".lock", "a") if strategy == "group+flock" else None
        while time.monotonic() < stop_at + 1:
            try:
                batch = [pending.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(batch) < 64:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            try:
                if side is not None:
                    fcntl.flock(side, fcntl.LOCK_EX)
                try:
                    write(conn, len(batch))
                finally:
                    if side is not None:
                        fcntl.flock(side, fcntl.LOCK_UN)
                failed = False
            except sqlite3.OperationalError:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failed = True
            for done in batch:
                done.failed = failed
                done.set()

    def client() -> None:
        conn = connect(path, sync) if not strategy.startswith("group") else None
        while time.monotonic() < stop_at:
            if THINK[0]:
                time.sleep(THINK[0])
            started = time.perf_counter()
            try:
                if strategy == "busy":
                    write(conn)
                elif strategy == "lock":
                    with lock:
                        write(conn)
                else:
                    done = threading.Event()
                    pending.put(done)
                    done.wait()
                    if done.failed:
                        raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
                with record:
                    errors[0] += 1
                continue
            with record:
                latencies.append(time.perf_counter() - started)

    helpers = [threading.Thread(target=writer, daemon=True)] if strategy.startswith("group") else []
    clients = [threading.Thread(target=client) for _ in range(threads)]
    for thread in helpers + clients:
        thread.start()
    for thread in clients:
        thread.join()
    out.put((latencies, errors[0]))


def run(strategy: str, args: argparse.Namespace) -> str:
    directory = tempfile.mkdtemp(prefix="sqlite-writes-")
    path = os.path.join(directory, "w.sqlite3")
    conn = connect(path, args.sync)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL, at REAL NOT NULL)")
    conn.close()
    out: multiprocessing.Queue = multiprocessing.Queue()
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=worker, args=(path, strategy, args.threads, args.seconds, args.sync, out,
                                                                 args.inside, args.think / 1000))
             for _ in range(args.processes)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(10)
    elapsed = time.monotonic() - started
    latencies = sorted(v for lats, _ in results for v in lats)
    errors = sum(e for _, e in results)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0  # noqa
    for name in os.listdir(directory):  # the database, its -wal and -shm, the flock side file
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)
    return (f"| {strategy} | {len(latencies) / elapsed:,.0f} | {pick(0.5):.1f} | {pick(0.99):.1f} | "
            f"{(latencies[-1] * 1000 if latencies else 0):.0f} | {errors} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--sync", default="FULL", choices=("OFF", "NORMAL", "FULL"))
    parser.add_argument("--strategies", default="busy,lock,group,group+flock")
    parser.add_argument("--think", type=float, default=0.0, help="ms each thread waits between its writes")
    parser.add_argument("--inside", type=int, default=0, help="JSON round trips inside each transaction")
    args = parser.parse_args()
    print(f"{args.processes} processes x {args.threads} threads, synchronous={args.sync}, {args.inside} JSON round "
          f"trips inside each transaction, {args.think:g} ms between a thread's writes, {args.seconds:g} s each, "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| strategy | writes/s | p50 ms | p99 ms | max ms | locked errors |\n|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        print(run(strategy, args), flush=True)


if __name__ == "__main__":
    main()

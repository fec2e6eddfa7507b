#!/usr/bin/env python3
"""Micro-benchmark: an execution's store cycle (create_execution, claim_execution, finish_execution: the
three durable writes of every webhook) through the real Store backends, SQLite against PostgreSQL.

    .venv/bin/python bench/store_cycle.py [--seconds 5] [--threads 1,8] [--backends sqlite,postgres]

SQLite: a fresh file in a temporary directory (synchronous=FULL, group commit, as the service runs it).
PostgreSQL: a fresh database on IPAAS_BENCH_POSTGRES_URL (default the local server, user postgres),
dropped at the end; pool of IPAAS_DB_POOL_SIZE's default (10). Each run is bounded by --seconds and by
50,000 cycles. Prints one markdown line per backend and thread count: cycles/s, latency of a cycle
p50/p99 (ms), and this process's CPU per cycle (µs; the PostgreSQL server's own CPU is not in it)."""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.models import Execution, ExecutionStatus, User, Workflow, new_id, utcnow  # noqa: E402
from app.store import Store, create_store  # noqa: E402

ADMIN_URL = os.environ.get("IPAAS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MAX_CYCLES = 50_000
PAYLOAD = {"event": "invoice.paid", "data": {"id": secrets.token_hex(16), "lines": [{"sku": str(i)} for i in range(8)]}}


@contextmanager
def database(backend: str) -> Iterator[str]:
    """The URL of a fresh, empty database of `backend`, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as scratch:
            yield f"sqlite:///{scratch}/bench.sqlite3"
        return
    import psycopg

    name = f"ipaas_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(store: Store) -> Workflow:
    now = utcnow()
    tenant = store.ensure_tenant("bench", tenant_id=new_id("tn", now), now=now)
    user = store.create_user(User(id=new_id("usr", now), tenant_id=tenant.id, email="b@bench.test", created_at=now))
    return store.create_workflow(Workflow(id=new_id("wf", now), tenant_id=tenant.id, user_id=user.id, name="b",
                                          trigger_type="webhook", action_type="http_request",
                                          config={"url": "http://127.0.0.1:9/"}, enabled=True, created_at=now,
                                          updated_at=now))


def cycle(store: Store, workflow: Workflow, owner: str) -> None:
    now = utcnow()
    execution = Execution(id=new_id("ex", now), tenant_id=workflow.tenant_id, workflow_id=workflow.id,
                          status=ExecutionStatus.QUEUED, trigger="webhook", payload=PAYLOAD, created_at=now,
                          owner=owner)
    store.create_execution(execution, idempotency_key=execution.id)
    assert store.claim_execution(execution.id, owner=owner, now=utcnow()) is not None
    assert store.finish_execution(execution.id, owner=owner, status=ExecutionStatus.SUCCEEDED, attempts=1,
                                  now=utcnow(), result={"status_code": 200})


def measure(url: str, threads: int, seconds: float) -> tuple[float, list[float], float]:
    """Run cycles from `threads` threads for `seconds`; return (cycles/s, latencies in s, CPU s per cycle)."""
    store = create_store(url)
    store.init_schema()
    workflow = seed(store)
    for _ in range(20):  # warm up: connections open, statements prepared
        cycle(store, workflow, "warm")
    latencies: list[float] = []
    lock, stop_at = threading.Lock(), time.monotonic() + seconds

    def run(owner: str) -> None:
        mine = []
        while time.monotonic() < stop_at and len(latencies) + len(mine) < MAX_CYCLES:
            started = time.perf_counter()
            cycle(store, workflow, owner)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    cpu, wall = time.process_time(), time.monotonic()
    workers = [threading.Thread(target=run, args=(f"proc-{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    store.shutdown()
    return len(latencies) / wall, latencies, cpu / max(1, len(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    print("| backend | threads | cycles/s | p50 ms | p99 ms | client CPU µs/cycle |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for threads in map(int, args.threads.split(",")):
            with database(backend) as url:
                rate, latencies, cpu = measure(url, threads, args.seconds)
            quantiles = statistics.quantiles(latencies, n=100)
            print(f"| {backend} | {threads} | {rate:,.0f} | {quantiles[49] * 1000:.2f} | {quantiles[98] * 1000:.2f}"
                  f" | {cpu * 1e6:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""Distributed mode: gunicorn web processes + `flask --app wsgi worker` + PostgreSQL + a private Redis.

distributed: per run, the e2e load (e2e.saturate: wrk -c50 for `e2e` s) on three setups in turn, each on
  a fresh workflow after a warm-up: the single machine (gunicorn running executions itself, SQLite file),
  then web + 1 worker process and web + 2 worker processes on PostgreSQL and Redis (one web server and one
  database for both; the worker command is started anew for each). Production settings: 2 gunicorn
  processes x 8 threads, 10 threads per worker process, IPAAS_QUEUE_SIZE=100 (per process on one machine,
  the shared backlog in distributed mode). Measured per setup: delivered/s and CPU ms per delivered
  execution of each part: web (the gunicorn tree), worker (the worker command's tree), PostgreSQL (this
  database's backends; and separately the cluster's shared processes: WAL writer, checkpointer, ...,
  which serve other databases too), Redis (the redis-server).

sustained: `sustained` webhooks (100,000; quick 5,000) in bursts of `burst` a second (bench/sender.py
  --burst, 200 connections), 503s sent again after their Retry-After until accepted, against web + 2
  worker processes with IPAAS_QUEUE_SIZE=`sustained_queue` (1,000: one burst fits in the backlog).
  The shared backlog (queued executions in the store, as the web processes count it) is polled every
  0.5 s for its peak. Then the store is polled until every execution is terminal. Checked: every 202's
  execution `succeeded` and was delivered (lost = 202s that are not both), the receiver saw each
  execution id once (duplicated = deliveries beyond the first), and no row exists beyond the 202s.
  Bounded: the sender stops at `sustained_limit` s (25 min), the drain at 300 s (60 s without progress)."""
from __future__ import annotations

import threading
import time

import e2e
import storm
import wrk
from cluster import PostgresDatabase, Redis, Workers, cluster_pids
from context import Context
from procs import CpuTally, CpuWatch
from service import Service
from stats import F1, F2, I, columns, total

DRAIN_LIMIT = 300.0
SENDER_CONNECTIONS = 200
PARTS = ("web", "worker", "postgres", "pg_shared", "redis")


def _warm(ctx: Context, server: Service) -> None:
    warm = server.create_workflow(ctx.receiver.url("/hook/slack"), name="warmup")
    wrk.run(server.webhook_url(warm), connections=50, seconds=ctx.timing.warmup)
    ctx.receiver.wait_quiet(quiet=1.0, limit=60)


def _measure(ctx: Context, server: Service, setup: str, index: int, parts: dict) -> dict:
    ctx.log(f"distributed run {index + 1}/{ctx.runs}: {setup}")
    record = {"scenario": "distributed", "run": index, "setup": setup, "settle_busy": ctx.settle()}
    workflow = server.create_workflow(ctx.receiver.url("/hook/slack"), name=f"{setup}-{index}")
    return ctx.save(e2e.saturate(ctx, server, workflow, parts, record))


def compare(ctx: Context) -> list[dict]:
    database, redis = PostgresDatabase().create(), Redis(ctx.workdir).start()
    web = Service(ctx.workdir, {"IPAAS_BROKER_URL": redis.url}, name="web", database=database)
    shared = {"postgres": database.backend_pids, "pg_shared": cluster_pids, "redis": redis.pids}
    records = []
    try:
        web.start()
        for index in range(ctx.runs):
            single = Service(ctx.workdir, name=f"single-{index}").start()
            try:
                _warm(ctx, single)
                records.append(_measure(ctx, single, "single machine, SQLite", index, {"web": single.pids}))
            finally:
                single.stop()
            for processes in (1, 2):
                workers = Workers(ctx.workdir, web.env, database, processes).start()
                try:
                    _warm(ctx, web)
                    parts = {"web": web.pids, "worker": workers.tree, **shared}
                    label = f"PostgreSQL + Redis, {processes} worker process{'es' if processes > 1 else ''}"
                    records.append(_measure(ctx, web, label, index, parts))
                finally:
                    workers.stop()
    finally:
        web.stop()
        redis.stop()
        database.drop()
    return records


class BacklogPeak(threading.Thread):
    """Poll the store's queued count every `interval` s; `peak` and when it was seen (time.time())."""

    def __init__(self, database: PostgresDatabase, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="backlog-peak")
        self.database, self.interval = database, interval
        self.peak, self.peak_at, self.samples = 0, 0.0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            queued = self.database.queued()
            self.samples += 1
            if queued > self.peak:
                self.peak, self.peak_at = queued, time.time()

    def stop(self) -> int:
        self._stop_event.set()
        self.join(10)
        return self.peak


def sustained(ctx: Context) -> list[dict]:
    rx, t = ctx.receiver, ctx.timing
    database, redis = PostgresDatabase().create(), Redis(ctx.workdir).start()
    web = Service(ctx.workdir, {"IPAAS_BROKER_URL": redis.url, "IPAAS_QUEUE_SIZE": str(t.sustained_queue)},
                  name="sustained", database=database)
    workers = None
    try:
        web.start()
        workers = Workers(ctx.workdir, web.env, database, 2).start()
        workflow = web.create_workflow(rx.url("/hook/slack"), name="sustained")
        rx.reset()
        record = {"scenario": "sustained", "settle_busy": ctx.settle(), "webhooks": t.sustained, "burst": t.burst,
                  "queue_size": t.sustained_queue}
        ctx.log(f"sustained: {t.sustained:,} webhooks in bursts of {t.burst:,}/s, web + 2 workers, "
                f"IPAAS_QUEUE_SIZE={t.sustained_queue} (bounded: {t.sustained_limit:.0f} s to send)")
        parts = {"web": web.pids, "worker": workers.tree, "postgres": database.backend_pids,
                 "pg_shared": cluster_pids, "redis": redis.pids}
        cpu, tallies, backlog = CpuWatch(), {name: CpuTally(pids) for name, pids in parts.items()}, \
            BacklogPeak(database)
        for thread in (*tallies.values(), backlog):
            thread.start()
        ids_path = ctx.workdir / "sustained.ids"
        sent = storm.send(web.webhook_url(workflow), t.sustained, SENDER_CONNECTIONS, str(ids_path),
                          deadline=t.sustained_limit, extra=("--burst", str(t.burst), "--retry-503"))
        s202 = sent["status"].get("202", 0)
        ctx.log(f"  sent in {sent['t_end'] - sent['t_start']:.0f} s: 202 {s202:,}, 503 "
                f"{sent['status'].get('503', 0):,} (retried), errors {sent['error_kinds']}; draining")
        finished, counts = storm.wait_terminal(web, workflow, s202, DRAIN_LIMIT, stall=60, interval=0.5)
        rx.wait_quiet(quiet=1.0, limit=30)
        used = {name: tally.stop() for name, tally in tallies.items()}
        record["cpu"] = cpu.stop()
        record["peak_backlog"] = backlog.stop()
        record.update(_verify(ctx, database, ids_path, s202, counts))
        record.update({
            "s202": s202, "s503": sent["status"].get("503", 0), "retries": sent["retries"],
            "other": sum(v for k, v in sent["status"].items() if k not in ("202", "503")) + sent["errors"],
            "error_kinds": sent["error_kinds"], "ack_p50_ms": sent["p50_ms"], "ack_p99_ms": sent["p99_ms"],
            "send_s": round(sent["t_end"] - sent["t_start"], 1),
            "accepted_per_s": round(s202 / max(1e-6, sent["t_end"] - sent["t_start"]), 1),
            "peak_backlog_after_s": round(backlog.peak_at - sent["t_start"], 1) if backlog.peak_at else None,
            "drain_s": round(finished - sent["t_end"], 1) if finished else None,
            "wall_s": round(finished - sent["t_start"], 1) if finished else None,
        })
        if finished:
            record["delivered_per_s"] = round(record["delivered"] / record["wall_s"], 1)
        record.update({f"cpu_ms_{name}": round(seconds * 1000 / max(1, record["delivered"]), 2)
                       for name, seconds in used.items()})
        ctx.log(f"  202 {s202:,}  succeeded {record['succeeded']:,}  lost {record['lost']}  duplicated "
                f"{record['duplicates']}  extra rows {record['rows_not_202']}  peak backlog {record['peak_backlog']:,}"
                f"  send {record['send_s']} s  drain {record['drain_s']} s  wall {record['wall_s']} s")
        return [ctx.save(record)]
    finally:
        if workers is not None:
            workers.stop()
        web.stop()
        redis.stop()
        database.drop()


def _verify(ctx: Context, database: PostgresDatabase, ids_path, s202: int, counts: dict[str, int]) -> dict:
    """Every 202 succeeded and delivered, each delivery once, no row that was not a 202."""
    ids = ids_path.read_text().split()
    statuses = database.statuses(ids)
    succeeded = {i for i, status in statuses.items() if status == "succeeded"}
    delivered = set(ctx.receiver.get("/_ids")["ids"])
    stats = ctx.receiver.stats()
    return {"ids": len(ids), "unique_ids": len(set(ids)), "rows": sum(counts.values()), "counts": counts,
            "succeeded": len(succeeded), "delivered": stats["unique"], "duplicates": stats["duplicates"],
            "lost": s202 - len(succeeded & delivered), "delivered_not_202": len(delivered - set(ids)),
            "rows_not_202": sum(counts.values()) - len(set(ids))}


COMPARE_ROWS = [
    ("**delivered/s, sustained**", "completed_per_s", I),
    ("slowest 1-s window, delivered/s", "min_window_per_s", I),
    ("CPU ms per execution: web (gunicorn tree)", "cpu_ms_web", F2),
    ("CPU ms per execution: worker (worker command tree)", "cpu_ms_worker", F2),
    ("CPU ms per execution: PostgreSQL (this database's backends)", "cpu_ms_postgres", F2),
    ("CPU ms per execution: PostgreSQL shared processes (WAL writer, checkpointer...; all databases)",
     "cpu_ms_pg_shared", F2),
    ("CPU ms per execution: Redis", "cpu_ms_redis", F2),
    ("**CPU ms per execution: all parts**", "cpu_ms", F2),
    ("accept-to-delivered p50 / p99 ms", "a2d_p50_ms|a2d_p99_ms", F1),
    ("ack p50 / p99 ms", "ack_p50_ms|ack_p99_ms", F1),
    ("503 answers / lost / duplicates (sum of runs)", "s503|lost|duplicates", total),
    ("other processes' CPU during the load, cores", "foreign_cores", F2),
]


def table(records: list[dict]) -> str:
    for record in records:
        record["foreign_cores"] = record.get("cpu", {}).get("foreign_cores")
    return columns(records, "setup", COMPARE_ROWS)


def sustained_table(records: list[dict]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for record in records:
        for key in ("webhooks", "burst", "queue_size", "s202", "s503", "retries", "other", "succeeded", "delivered",
                    "lost", "duplicates", "rows_not_202", "delivered_not_202", "peak_backlog", "peak_backlog_after_s",
                    "send_s", "accepted_per_s", "drain_s", "wall_s", "delivered_per_s", "ack_p50_ms", "ack_p99_ms",
                    *[f"cpu_ms_{part}" for part in PARTS]):
            lines.append(f"| {key} | {record.get(key)} |")
        lines.append(f"| other processes' CPU, cores | {record['cpu'].get('foreign_cores')} |")
    return "\n".join(lines)

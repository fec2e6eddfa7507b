"""Scenario 1, ingest: accepted webhooks/s and ack latency at 50 concurrent senders (wrk -c50 -t2),
for the service and, in the same run, for the bare-Flask baseline under the same gunicorn settings.

Targets, measured in turn within each run (so a burst of foreign load hits one run, not one target):
  bare    bench/baseline_app.py, POST -> 202, no database
  sqlite  the same + one INSERT per request, WAL, synchronous=FULL (the service's durability)
  ipaas   the service, production config, a slack_message workflow delivering to the receiver:
          the engine runs alongside, and once its queue is full the acks wait for free slots, so
          at saturation this is the pipeline's rate, not the request path's alone (bench/profiling.py
          splits the two). Logs at WARNING (see RESULTS.md)
  info    the same at IPAAS_LOG_LEVEL=INFO, the production default (JSON lines to a file)
There is no "engine stalled behind a huge queue" variant: the supervisor's recovery round takes every
free slot once a second, O(IPAAS_QUEUE_SIZE), which would distort it.
"""
from __future__ import annotations

import wrk
from context import Context
from procs import CpuWatch, cpu_seconds, split_sampled
from service import Baseline, Group, Service

KEYS = ("accepted_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "s503", "s429", "other_status",
        "socket_errors", "requests", "accepted", "wrk_cpu_cores")


def _measure(ctx: Context, record: dict, name: str, url: str, server: Group) -> None:
    cpu, server_cpu = CpuWatch(), cpu_seconds(server.pids())
    with split_sampled(server.port) as split:
        result = wrk.run(url, connections=50, seconds=ctx.timing.ingest)
    server_cpu = cpu_seconds(server.pids()) - server_cpu
    # wrk's 50 connections per gunicorn worker: the workers race for accept, and an uneven split (say
    # 40/10) caps a CPU-bound target near one process's speed. Recorded to explain outliers.
    record[f"{name}_conn_split"] = split
    record.update({f"{name}_{key}": result[key] for key in KEYS})
    record[f"{name}_cpu"] = cpu.stop()
    # CPU the server's processes used per accepted webhook: much less sensitive than the rates to
    # other people's load on the machine (for the service it includes the engine's deliveries).
    record[f"{name}_cpu_ms"] = round(server_cpu * 1000 / max(1, result["accepted"]), 2)
    ctx.log(f"  {name:8s} {result['accepted_per_s']:8.0f}/s  p50 {result['p50_ms']:.1f} ms  "
            f"p99 {result['p99_ms']:.1f} ms  503s {result['s503']}  other {result['other_status']}  "
            f"server CPU {record[f'{name}_cpu_ms']} ms/webhook  connections per worker {split}  "
            f"foreign cpu {record[f'{name}_cpu']['foreign_cores']}")


def run(ctx: Context) -> list[dict]:
    rx = ctx.receiver
    bare = Baseline(ctx.workdir).start()
    sqlite = Baseline(ctx.workdir, "FULL").start()
    ipaas = Service(ctx.workdir, name="ingest").start()
    info = Service(ctx.workdir, {"IPAAS_LOG_LEVEL": "INFO"}, name="ingest-info").start()
    records = []
    try:
        targets = {"bare": (bare.url(), bare), "sqlite": (sqlite.url(), sqlite),
                   "ipaas": (ipaas.webhook_url(ipaas.create_workflow(rx.url("/hook/slack"))), ipaas),
                   "info": (info.webhook_url(info.create_workflow(rx.url("/hook/slack"))), info)}
        for url, _ in targets.values():  # warm up: imports, connections, SQLite pages, the template cache
            wrk.run(url, connections=50, seconds=ctx.timing.warmup)
        rx.wait_quiet()
        for index in range(ctx.runs):
            ctx.log(f"ingest run {index + 1}/{ctx.runs}")
            settled = ctx.settle()
            record = {"scenario": "ingest", "run": index, "settle_busy": settled, "cpu": CpuWatch()}
            for name, (url, server) in targets.items():
                _measure(ctx, record, name, url, server)
                if name in ("ipaas", "info"):  # let the engine drain its backlog before the next target
                    rx.wait_quiet(quiet=1.0, limit=120)
            record["cpu"] = record["cpu"].stop()
            record["ratio_bare"] = record["ipaas_accepted_per_s"] / record["bare_accepted_per_s"]
            record["ratio_sqlite"] = record["ipaas_accepted_per_s"] / record["sqlite_accepted_per_s"]
            record["ratio_info"] = record["info_accepted_per_s"] / record["bare_accepted_per_s"]
            records.append(ctx.save(record))
    finally:
        for server in (bare, sqlite, ipaas, info):
            server.stop()
    return records

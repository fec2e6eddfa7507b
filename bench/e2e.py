"""Scenario 2, end to end: executions completed per second and accept-to-delivered latency.

Saturated: wrk -c50 drives webhooks as fast as they are acked for `e2e` s (60 s; 15 s quick); the
engine's queue fills within a second and from then on acks wait for free slots, so the accepted
rate follows the delivery rate. completed/s = receiver deliveries (first arrivals) in
[start + e2e_skip, end) / that span; accept-to-delivered = arrival at the receiver - the
execution's created_at (recorded when the webhook is taken in), same machine clock. Also the
slowest 1-s window of that span (is it sustained?), and that nothing acked was lost (DB rows
of the run's workflow, all succeeded, = receiver unique deliveries, once the backlog drained).

Paced: wrk -c10 with a fixed per-connection pause, offering about half the saturated rate just
measured, for `paced` s: ack and accept-to-delivered latency below saturation."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

import wrk
from context import Context
from procs import CpuTally, CpuWatch, split_sampled
from service import Service

PACED_CONNECTIONS = 10


def saturate(ctx: Context, server: Service, workflow: str, parts: Mapping[str, Callable[[], Iterable[int]]],
             record: dict) -> dict:
    """wrk -c50 on `workflow` for `e2e` s, then wait for the backlog to drain; fills `record` with the rates,
    latencies, losses, and `cpu_ms_<part>`: CPU ms per delivered execution of each part's processes (the
    pids given by `parts`, sampled every 0.5 s: procs.CpuTally)."""
    rx, t = ctx.receiver, ctx.timing
    rx.reset()
    cpu, tallies = CpuWatch(), {name: CpuTally(pids) for name, pids in parts.items()}
    for tally in tallies.values():
        tally.start()
    with split_sampled(server.port) as split:
        load = wrk.run(server.webhook_url(workflow), connections=50, seconds=t.e2e)
    # As in ingest.py: all 50 connections on one gunicorn process cap the run near one core.
    record["conn_split"] = split
    used = {name: tally.stop() for name, tally in tallies.items()}
    record["cpu"] = cpu.stop()
    start, end = load["t_start"] + t.e2e_skip, load["t_end"]
    window = rx.get(f"/_latency?from={start}&to={end}")
    series = rx.get(f"/_series?from={start}&to={end}&step=1")["counts"]
    delivered_in_load = max(1, rx.get(f"/_latency?from=0&to={end}")["n"])
    rx.wait_quiet(quiet=1.5, limit=120)
    stats, counts = rx.stats(), server.counts(workflow)
    record.update({
        "completed_per_s": round(window["n"] / (end - start), 1),
        "min_window_per_s": min(series) if series else None,
        "a2d_p50_ms": window.get("p50_ms"), "a2d_p99_ms": window.get("p99_ms"),
        "a2d_max_ms": window.get("max_ms"),
        "accepted_per_s": load["accepted_per_s"], "ack_p50_ms": load["p50_ms"], "ack_p99_ms": load["p99_ms"],
        "s503": load["s503"], "other_status": load["other_status"], "socket_errors": load["socket_errors"],
        "rows": sum(counts.values()), "succeeded": counts.get("succeeded", 0),
        "delivered": stats["unique"], "duplicates": stats["duplicates"],
        # wrk does not count the requests in flight when it stops: the rows are the truth.
        "lost": sum(counts.values()) - stats["unique"],
    })
    # CPU per execution over the whole load (ingest + run + record, see ingest.py), per part
    record.update({f"cpu_ms_{name}": round(seconds * 1000 / delivered_in_load, 2) for name, seconds in used.items()})
    record["cpu_ms"] = round(sum(used.values()) * 1000 / delivered_in_load, 2)
    ctx.log(f"  completed {record['completed_per_s']:.0f}/s (slowest second {record['min_window_per_s']})"
            f"  a2d p50 {record['a2d_p50_ms']} p99 {record['a2d_p99_ms']} ms  ack p99 {load['p99_ms']:.0f} ms"
            f"  rows {record['rows']} delivered {record['delivered']}  connections per process {split}"
            f"  CPU ms/execution {record['cpu_ms']} {[record[f'cpu_ms_{name}'] for name in used]}"
            f"  foreign cpu {record['cpu']['foreign_cores']}")
    return record


def run(ctx: Context) -> list[dict]:
    rx, t = ctx.receiver, ctx.timing
    server = Service(ctx.workdir, name="e2e").start()
    records = []
    try:
        warm = server.create_workflow(rx.url("/hook/slack"), name="warmup")
        wrk.run(server.webhook_url(warm), connections=50, seconds=t.warmup)
        rx.wait_quiet()
        for index in range(ctx.runs):
            ctx.log(f"e2e run {index + 1}/{ctx.runs}")
            record = {"scenario": "e2e", "run": index, "settle_busy": ctx.settle()}
            workflow = server.create_workflow(rx.url("/hook/slack"), name=f"e2e-{index}")
            saturate(ctx, server, workflow, {"server": server.pids}, record)
            _paced(ctx, server, record, index)
            records.append(ctx.save(record))
    finally:
        server.stop()
    rates = sorted(r["completed_per_s"] for r in records)
    if rates:
        ctx.e2e_rate = rates[len(rates) // 2]
    return records


def _paced(ctx: Context, server: Service, record: dict, index: int) -> None:
    rx = ctx.receiver
    rate = max(10.0, record["completed_per_s"] / 2)
    pause_ms = max(1, int(PACED_CONNECTIONS * 1000 / rate))
    workflow = server.create_workflow(rx.url("/hook/slack"), name=f"paced-{index}")
    rx.reset()
    time.sleep(0.5)
    load = wrk.run(server.webhook_url(workflow), connections=PACED_CONNECTIONS, threads=1, seconds=ctx.timing.paced,
                   delay_ms=pause_ms)
    rx.wait_quiet(quiet=1.0, limit=60)
    window = rx.get(f"/_latency?from={load['t_start']}&to={load['t_end'] + 60}")
    record.update({"paced_rate": load["accepted_per_s"], "paced_pause_ms": pause_ms,
                   "paced_p50_ms": load["p50_ms"], "paced_p99_ms": load["p99_ms"], "paced_max_ms": load["max_ms"],
                   "paced_a2d_p50_ms": window.get("p50_ms"), "paced_a2d_p99_ms": window.get("p99_ms"),
                   "paced_s503": load["s503"]})
    ctx.log(f"  paced {load['accepted_per_s']:.0f}/s: ack p50 {load['p50_ms']:.1f} p99 {load['p99_ms']:.1f} ms,"
            f" a2d p50 {window.get('p50_ms')} p99 {window.get('p99_ms')} ms")

"""Scenario 3, storm: exactly 10,000 webhooks from 500 concurrent connections (bench/sender.py)
against the default pool (per process: IPAAS_WORKERS=10, IPAAS_QUEUE_SIZE=100, 5 s enqueue wait).

A fresh server (and database) per run. Checked: every 202's execution ends `succeeded` and is
delivered exactly once (the receiver's ids equal the 202 ids, no duplicates), the 503s left no row.
Measured: peak RSS of the gunicorn process group (sampled every 100 ms from /proc), the send time
(first request -> last answer), the drain time (last answer -> every execution terminal, the
database polled every 100 ms), and total = send + drain against ideal = 202 count / the e2e
scenario's sustained completed/s (the time the pipeline needs for that work at its measured rate)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from context import Context
from procs import CpuWatch, RssPeak
from service import BENCH, Service

DRAIN_LIMIT = 300.0
STALL = 30.0
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def send(url: str, n: int, c: int, ids_out: str | None = None, deadline: float = 600.0,
         extra: tuple[str, ...] = ()) -> dict:
    """Run bench/sender.py in its own process (its CPU is not the harness's GIL) and return its summary;
    `extra`: more of its options (--burst B --retry-503)."""
    command = [sys.executable, str(BENCH / "sender.py"), "--url", url, "-n", str(n), "-c", str(c),
               "--deadline", str(deadline), *extra]
    if ids_out:
        command += ["--ids-out", ids_out]
    done = subprocess.run(command, capture_output=True, text=True, timeout=deadline + 30)
    if done.returncode != 0:
        raise RuntimeError(f"sender failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_terminal(server: Service, workflow: str, expected: int, limit: float,
                  stall: float = STALL, interval: float = 0.1) -> tuple[float | None, dict]:
    """Poll the database until `expected` executions of the workflow are terminal and none is queued or
    running; return the time that was seen (None: not within `limit` s, or no progress for `stall` s)."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = server.counts(workflow)
        ended = sum(counts.get(s, 0) for s in TERMINAL)
        if ended >= expected and not counts.get("queued") and not counts.get("running"):
            return time.time(), counts
        if ended != last:
            last, since = ended, time.monotonic()
        elif time.monotonic() - since > stall:
            break  # stuck: report what is left instead of waiting out the limit
        time.sleep(interval)
    return None, server.counts(workflow)


def run(ctx: Context) -> list[dict]:
    rx, t = ctx.receiver, ctx.timing
    records = []
    for index in range(ctx.runs):
        ctx.log(f"storm run {index + 1}/{ctx.runs}: {t.storm_requests} webhooks from "
                f"{t.storm_connections} connections")
        server = Service(ctx.workdir, name=f"storm-{index}").start()
        try:
            workflow = server.create_workflow(rx.url("/hook/slack"))
            rx.reset()
            settled = ctx.settle()
            ids_path = ctx.workdir / f"storm-{index}.ids"
            cpu, rss = CpuWatch(), RssPeak(server.pgrp)
            rss.start()
            time.sleep(0.3)
            rss_idle = rss.peak  # before the first request
            sent = send(server.webhook_url(workflow), t.storm_requests, t.storm_connections, str(ids_path))
            s202 = sent["status"].get("202", 0)
            finished, counts = wait_terminal(server, workflow, s202, DRAIN_LIMIT)
            rx.wait_quiet(quiet=1.0, limit=30)
            peak = rss.stop()
            record = {"scenario": "storm", "run": index, "settle_busy": settled, "cpu": cpu.stop()}
            ids = ids_path.read_text().split()
            statuses = server.statuses(ids)
            succeeded = {i for i, status in statuses.items() if status == "succeeded"}
            delivered_ids = set(rx.get("/_ids")["ids"])
            stats = rx.stats()
            by_status: dict[str, int] = {}
            for status in statuses.values():
                by_status[status] = by_status.get(status, 0) + 1
            by_status["missing"] = len(set(ids)) - len(statuses)
            total = (finished - sent["t_start"]) if finished else None
            record.update({
                "requests": sent["sent"], "s202": s202, "s503": sent["status"].get("503", 0),
                "other": sum(v for k, v in sent["status"].items() if k not in ("202", "503")) + sent["errors"],
                "error_kinds": sent["error_kinds"], "error_codes": sent["error_codes"], "ids": len(ids),
                "s503_queue_full": sent["error_codes"].get("503 queue_full", 0),
                "s503_other": sent["status"].get("503", 0) - sent["error_codes"].get("503 queue_full", 0),
                "rows": sum(counts.values()), "counts": counts, "succeeded": len(succeeded),
                "statuses_of_202": by_status,
                "delivered": stats["unique"], "duplicates": stats["duplicates"],
                "delivered_not_202": len(delivered_ids - set(ids)),
                "lost": s202 - len(succeeded & delivered_ids),
                "peak_rss_mb": round(peak / 2**20, 1), "idle_rss_mb": round(rss_idle / 2**20, 1),
                "rss_samples": rss.samples,
                "send_s": round(sent["t_end"] - sent["t_start"], 2),
                "drain_s": round(finished - sent["t_end"], 2) if finished else None,
                "total_s": round(total, 2) if total else None,
                "ideal_s": round(s202 / ctx.e2e_rate, 2) if ctx.e2e_rate else None,
                "ack_p50_ms": sent["p50_ms"], "ack_p99_ms": sent["p99_ms"], "ack_max_ms": sent["max_ms"],
                "sender_cpu_s": sent["cpu_s"],
            })
            if total and ctx.e2e_rate:
                record["ideal_ratio"] = round(total / record["ideal_s"], 2)
            ctx.log(f"  202 {s202}  503 {record['s503']} {sent['error_codes']}  other {record['other']}"
                    f"  succeeded {record['succeeded']}  delivered {record['delivered']}"
                    f" (dup {record['duplicates']})  lost {record['lost']}"
                    f"  rows {record['rows']}  peak RSS {record['peak_rss_mb']} MB  send {record['send_s']} s"
                    f"  drain {record['drain_s']} s  total/ideal {record.get('ideal_ratio')}")
            records.append(ctx.save(record))
        finally:
            server.stop()
    return records

"""The shared yardstick, run (never modified) in the same session: /work/shared/bench/bench.py load
against this service with --mock at bench/receiver.py (its /_stats and /_reset are compatible with
the shared mock), then /work/shared/bench/run_baseline.sh (bare Flask, + SQLite NORMAL and FULL).
Their JSON lines go to bench/out/; the summary table is printed and saved in the record.

Then the cost of this harness's wrk script: bench/baseline_app.py (bare Flask) driven by bench/post.lua with
its per-status response() callback and without it (WRK_STATUS=0, like the shared post.lua), alternately,
`runs` x 10 s each: does counting 202s vs 503s in Lua slow wrk down enough to matter?"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import wrk
from context import Context
from procs import CpuWatch, connection_split, free_port
from service import Baseline, Service
from stats import spread

SHARED = Path(os.environ.get("IPAAS_SHARED_BENCH", "/work/shared/bench"))


def run(ctx: Context) -> list[dict]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    service_out = ctx.out.parent / f"shared-ipaas-{stamp}.jsonl"
    baseline_out = ctx.out.parent / f"shared-baseline-{stamp}.jsonl"
    server = Service(ctx.workdir, name="shared").start()
    cpu = CpuWatch()
    try:
        workflow = server.create_workflow(ctx.receiver.url("/hook/slack"))
        ctx.log("shared yardstick: bench.py load against the service (3 x 15 s, -c50)")
        subprocess.run(["python3", str(SHARED / "bench.py"), "load", "--url", server.webhook_url(workflow),
                        "-c", "50", "-d", "15", "--runs", str(ctx.runs), "--pid", str(server.pgrp),
                        "--mock", ctx.receiver.url(), "--label", "ipaas (gunicorn.conf.py, 2 gthread x8)",
                        "--out", str(service_out)], check=True, timeout=600, capture_output=True)
    finally:
        server.stop()
    ctx.log("shared yardstick: run_baseline.sh (bare Flask, + SQLite NORMAL, + SQLite FULL)")
    env = dict(os.environ, OUT=str(baseline_out), PORT=str(free_port()), RUNS=str(ctx.runs))
    # Not from the project root: gunicorn would load ./gunicorn.conf.py (the service's) for the baseline too.
    subprocess.run([str(SHARED / "run_baseline.sh")], env=env, check=True, timeout=900, capture_output=True,
                   cwd=ctx.workdir)
    summary = subprocess.run(["python3", str(SHARED / "bench.py"), "summarize", str(service_out), str(baseline_out)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    print(summary)
    record = ctx.save({"scenario": "shared", "run": 0, "cpu": cpu.stop(), "table": summary,
                       "files": [str(service_out), str(baseline_out)]})
    return [record, lua_cost(ctx)[0]]


def lua_cost(ctx: Context) -> list[dict]:
    ctx.log("wrk script cost: bare Flask with and without the response() callback")
    bare = Baseline(ctx.workdir).start()
    cpu = CpuWatch()
    results: dict[str, list[dict]] = {"counting": [], "plain": []}
    try:
        wrk.run(bare.url(), seconds=3)
        for _ in range(ctx.runs):
            for name in results:
                split: list[int] = []
                probe = threading.Timer(2.0, lambda: split.extend(connection_split(bare.port)))
                probe.start()
                results[name].append(wrk.run(bare.url(), seconds=10, count_status=name == "counting"))
                probe.join()
                results[name][-1]["conn_split"] = split
    finally:
        bare.stop()
    lines = ["| wrk script | accepted/s | p50 ms | p99 ms | wrk CPU cores | connections per gunicorn worker |",
             "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        script = "response() counts statuses" if name == "counting" else "no response() (WRK_STATUS=0)"
        column = lambda key, fmt="{:.0f}": spread([r[key] for r in runs], fmt)  # noqa: E731
        lines.append(f"| post.lua, {script} | {column('accepted_per_s')} | {column('p50_ms', '{:.1f}')}"
                     f" | {column('p99_ms', '{:.1f}')} | {column('wrk_cpu_cores', '{:.2f}')}"
                     f" | {', '.join('/'.join(map(str, r['conn_split'])) for r in runs)} |")
    table = "\n".join(lines)
    print(table)
    return [ctx.save({"scenario": "lua", "run": 0, "cpu": cpu.stop(), "table": table, "results": results})]

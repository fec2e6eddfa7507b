#!/usr/bin/env python3
"""The ipaas performance harness: one command, run by hand (performance is never asserted in tests).

    .venv/bin/python bench/run.py [--quick] [--scenarios ingest,e2e,storm,cancel,recovery] [--runs 3]
    .venv/bin/python bench/run.py --scenarios shared      # the shared yardstick, same session (+ lua)
    .venv/bin/python bench/run.py --scenarios lua         # what wrk's response() callback costs
    .venv/bin/python bench/run.py --scenarios distributed,sustained [--sustained 100000]   # PostgreSQL + Redis

Starts every process itself on 127.0.0.1 (the service under gunicorn with gunicorn.conf.py on a temp
SQLite file, the bare-Flask baseline, bench/receiver.py), prints a markdown table (median [min–max]
of the runs) and appends every raw record as a JSON line to bench/out/run-<date>.jsonl.
Needs wrk (apt-get install wrk; /work/shared/bench/setup.sh installs it). See bench/README.md."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distributed  # noqa: E402
import e2e  # noqa: E402
import service  # noqa: E402
import faults  # noqa: E402
import ingest  # noqa: E402
import shared  # noqa: E402
import storm  # noqa: E402
from context import Context, Timing  # noqa: E402
from service import BENCH, ROOT, Receiver, workdir  # noqa: E402
from stats import table  # noqa: E402

SCENARIOS = {"ingest": ingest.run, "e2e": e2e.run, "storm": storm.run, "cancel": faults.cancel,
             "recovery": faults.recovery, "shared": shared.run, "lua": shared.lua_cost,
             "distributed": distributed.compare, "sustained": distributed.sustained}
TABLES = {"distributed": distributed.table, "sustained": distributed.sustained_table}  # their own layout
DEFAULT = "ingest,e2e,storm,cancel,recovery"


def _output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30,
                              cwd=service.APP_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine(commit: str | None) -> dict:
    """What the figures were measured on and of: cores, versions, the commit."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "?")
    except OSError:
        pass
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "scenario": "machine", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
        "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "gunicorn": _output([str(Path(sys.executable).parent / "gunicorn"),
                                                               "--version"]),
        "wrk": _output(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "missing",
        "commit": commit or (_output(["git", "rev-parse", "--short", "HEAD"])
                             + (" + uncommitted changes" if dirty else "")),
        "root": str(service.APP_ROOT),
        "load": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="ipaas performance harness (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="shorter runs: about 3 minutes in all")
    parser.add_argument("--scenarios", default=DEFAULT, help=f"comma-separated, from {','.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3)")
    parser.add_argument("--e2e-rate", type=float, help="executions/s for the storm's ideal time when the e2e "
                                                       "scenario is not run in the same invocation")
    parser.add_argument("--sustained", type=int, help="webhooks of the sustained scenario (default 100,000; "
                                                      "quick 5,000)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, databases)")
    parser.add_argument("--root", help="project tree to run instead of this one, e.g. an export made with "
                                       "`git archive COMMIT | tar -x -C DIR` (the .venv and bench/ stay these)")
    parser.add_argument("--commit", help="what to call the code measured in the report (default: git HEAD of "
                                         "the tree, marked when it has uncommitted changes)")
    parser.add_argument("--settle", type=float, help="seconds to wait at most, before each run, for other "
                                                     "processes' CPU use to drop below 0.3 cores (default: "
                                                     "60, quick: 0)")
    args = parser.parse_args()
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed: apt-get install wrk (or /work/shared/bench/setup.sh)")
    if args.root:
        service.APP_ROOT = Path(args.root).resolve()
        if not (service.APP_ROOT / "gunicorn.conf.py").exists():
            parser.error(f"{service.APP_ROOT} holds no gunicorn.conf.py")
    out_dir = BENCH / "out"
    out_dir.mkdir(exist_ok=True)
    directory = workdir()
    receiver = Receiver(directory).start()
    timing = Timing.quick() if args.quick else Timing()
    if args.sustained:
        timing.sustained = args.sustained
    ctx = Context(runs=args.runs or (1 if args.quick else 3), timing=timing,
                  workdir=directory, out=out_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl", receiver=receiver,
                  e2e_rate=args.e2e_rate,
                  settle_limit=args.settle if args.settle is not None else (0 if args.quick else 60))
    info = ctx.save(dict(machine(args.commit), quick=args.quick, scenarios=names))
    ctx.log(f"{info['nproc']} cores, Python {info['python']}, SQLite {info['sqlite']}, {info['gunicorn']}, "
            f"commit {info['commit']}, load {info['load']}; raw records -> {ctx.out}; work dir {directory}")
    started = time.monotonic()
    try:
        for name in names:
            SCENARIOS[name](ctx)
    finally:
        receiver.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    ctx.log(f"done in {time.monotonic() - started:.0f} s")
    print(f"\nipaas bench, {info['date']}, commit {info['commit']}, {info['nproc']} cores ({info['cpu']}), "
          f"Python {info['python']}, SQLite {info['sqlite']}, {info['gunicorn']}; "
          f"{'quick' if args.quick else 'full'} mode, {ctx.runs} run(s) per scenario\n")
    common = [r for r in ctx.records if r["scenario"] not in ("machine", "shared", "lua", *TABLES)]
    if common:
        print(table(common))
    for name, layout in TABLES.items():
        if any(record["scenario"] == name for record in ctx.records):
            print(f"\n{name}:\n{layout([r for r in ctx.records if r['scenario'] == name])}")
    for record in ctx.records:
        if record["scenario"] in ("shared", "lua"):
            print(f"\n{record['scenario']}:\n{record['table']}")
    print(f"\nraw records: {ctx.out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The service and its peers measured with the shared yardstick in one session (RESULTS.md, Round 3).

    .venv/bin/python bench/side_by_side.py [--root DIR --label NAME [--env K=V[,K=V]]]... [--runs 3] [--seconds 15]
                                           [--no-peers] [--log-level INFO] [--out DIR]

For each tree (default: this one): the service under gunicorn (gunicorn.conf.py, bench/service.py's settings
but the log level at the service's default, INFO) and a slack_message workflow posting to bench/receiver.py;
`/work/shared/bench/bench.py load` against its webhook (-c50, --runs x --seconds, --mock at the receiver).
Then the shared scripts as they are: `run_nodered.sh`, `run_n8n.sh` (both need `setup_peers.sh` once) and
`run_baseline.sh`. Each load runs under `flock /tmp/ipaas-bench.lock`, so that it never overlaps another
benchmark that takes the same lock; everything listens on 127.0.0.1 and is stopped at the end. Prints
`bench.py summarize` of all of it; the JSON lines stay in --out."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import service  # noqa: E402
from service import Receiver, Service, workdir  # noqa: E402

SHARED = Path(os.environ.get("IPAAS_SHARED_BENCH", "/work/shared/bench"))
LOCK = ["flock", "/tmp/ipaas-bench.lock"]


def main() -> int:
    parser = argparse.ArgumentParser(description="the service and its peers, one session")
    parser.add_argument("--root", action="append", default=[], help="project tree(s) to measure (default: this one)")
    parser.add_argument("--label", action="append", default=[], help="a label per --root")
    parser.add_argument("--env", action="append", default=[],
                        help="K=V[,K=V] for the service of the --root in the same position (e.g. IPAAS_REUSE_PORT=true)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-peers", action="store_true", help="only the service(s) and the bare baseline")
    parser.add_argument("--out", default=f"/tmp/ipaas-bench/results/side-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    roots = args.root or [str(service.ROOT)]
    labels = args.label + [Path(root).name for root in roots[len(args.label):]]
    work = workdir()
    receiver = Receiver(work).start()
    try:
        envs = args.env + [""] * (len(roots) - len(args.env))
        for root, label, extra in zip(roots, labels, envs):
            measure_service(Path(root).resolve(), label, args, receiver, work, out,
                            dict(pair.split("=", 1) for pair in extra.split(",") if pair))
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)
    env = dict(os.environ, OUT="", RUNS=str(args.runs), D=str(args.seconds), RESULTS=str(out))
    scripts = ["run_baseline.sh"] + ([] if args.no_peers else ["run_nodered.sh", "run_n8n.sh"])
    for script in scripts:
        print(f"{time.strftime('%H:%M:%S')} {script}", file=sys.stderr, flush=True)
        # Not from the project root: gunicorn would load ./gunicorn.conf.py (the service's) for the baseline too.
        subprocess.run([*LOCK, str(SHARED / script)], env={**env, "OUT": str(out / f"{script[:-3]}.jsonl")},
                       check=True, timeout=1200, cwd="/tmp", stdout=subprocess.DEVNULL)
    files = sorted(str(path) for path in out.glob("*.jsonl"))
    print(subprocess.run(["python3", str(SHARED / "bench.py"), "summarize", *files], capture_output=True, text=True,
                         check=True, timeout=60).stdout)
    return 0


def measure_service(root: Path, label: str, args: argparse.Namespace, receiver: Receiver, work: Path,
                    out: Path, extra_env: dict[str, str]) -> None:
    print(f"{time.strftime('%H:%M:%S')} ipaas {label} ({root}) {extra_env or ''}", file=sys.stderr, flush=True)
    service.APP_ROOT = root
    server = Service(work, env={"IPAAS_LOG_LEVEL": args.log_level, **extra_env}, name=f"svc-{label}").start()
    try:
        workflow = server.create_workflow(receiver.url("/hook/slack"))
        subprocess.run([*LOCK, "python3", str(SHARED / "bench.py"), "load", "--url", server.webhook_url(workflow),
                        "-c", "50", "-d", str(args.seconds), "--runs", str(args.runs), "--pid", str(server.pgrp),
                        "--mock", receiver.url(), "--label", f"ipaas {label} (gunicorn.conf.py, log {args.log_level})",
                        "--out", str(out / f"ipaas-{label}.jsonl")], check=True, timeout=900, stdout=subprocess.DEVNULL)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

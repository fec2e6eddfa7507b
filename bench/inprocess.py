#!/usr/bin/env python3
"""The pipeline without gunicorn and wrk: CPU per execution of the app's own code, less noisy than run.py.

    .venv/bin/python bench/inprocess.py [--executions 4000] [--threads 8] [--memory] [--switch-interval S] [--root DIR]
                                        [--tracing off|sampled|unsampled] [--log-level INFO]

Builds the app in this process (production settings: SQLite WAL synchronous=FULL in a temp directory, the
engine with its defaults, logs at WARNING unless --log-level says otherwise, to stderr: redirect it to a
file, as gunicorn does), a slack_message workflow delivering to bench/receiver.py on 127.0.0.1, then sends
the webhooks through the WSGI app from --threads threads and waits until the receiver has every one
(bounded: 120 s). Prints executions/s and the process's user + system CPU per execution: ingest, run and
record, with Flask's request handling but no HTTP server in front; and the CPU of the sending threads
alone per webhook (the test client, the WSGI app and the ingest, without the engine's threads). Used in RESULTS.md to compare changes
whose effect is smaller than run.py's run-to-run noise.

--tracing sampled|unsampled turns OpenTelemetry on (app/tracing.py) with the OTLP/HTTP exporter posting
to the same receiver (which counts those posts as deliveries without a bench id, so `unique` is unchanged)
and OTEL_TRACES_SAMPLER always_on or always_off.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service import ROOT, Receiver, workdir  # noqa: E402

DEADLINE_S = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description="in-process pipeline: CPU per execution")
    parser.add_argument("--executions", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="the memory store instead of SQLite")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, seconds (default 0.005)")
    parser.add_argument("--root", default=str(ROOT), help="project tree to run, e.g. a `git archive` export")
    parser.add_argument("--tracing", choices=("off", "sampled", "unsampled"), default="off")
    parser.add_argument("--log-level", default="WARNING", help="IPAAS_LOG_LEVEL; the service's default is INFO")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    work = workdir()
    receiver = Receiver(work).start()
    os.environ.update(
        IPAAS_DATABASE_URL="memory://" if args.memory else f"sqlite:///{work / 'inprocess.sqlite3'}",
        IPAAS_ALLOW_PRIVATE_NETWORKS="true", IPAAS_TENANT_RATE="1000000", IPAAS_TENANT_BURST="1000000",
        IPAAS_LOG_LEVEL=args.log_level, IPAAS_START_ENGINE="true", PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(dir=work))
    if args.tracing != "off":
        os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url(),
                          OTEL_TRACES_SAMPLER="always_on" if args.tracing == "sampled" else "always_off")
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from app import create_app, shutdown_app

    app = create_app()
    try:
        key = app.test_cli_runner().invoke(args=["users", "create", "bench@example.com", "--tenant", "bench"])
        auth = {"Authorization": f"Bearer {key.output.strip().splitlines()[-1].strip()}"}
        text = "{{ payload.action }} bench-id={{ execution.id }} bench-at={{ execution.created_at }}"
        workflow = app.test_client().post("/api/workflows", headers=auth, json={
            "name": "inprocess", "trigger_type": "webhook", "action_type": "slack_message",
            "config": {"webhook_url": receiver.url("/hook/slack"), "text": text}}).get_json()
        body = (Path(__file__).resolve().parent / "payload.json").read_bytes()
        per_thread = args.executions // args.threads
        answers: list[int] = []
        sender_cpu: list[float] = []

        def send() -> None:
            client = app.test_client()
            started_cpu = time.thread_time()
            for _ in range(per_thread):
                answers.append(client.post(f"/api/webhooks/{workflow['id']}", data=body,
                                           headers={"Content-Type": "application/json"}).status_code)
            sender_cpu.append(time.thread_time() - started_cpu)

        receiver.reset()
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        senders = [threading.Thread(target=send) for _ in range(args.threads)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(DEADLINE_S)
        total = per_thread * args.threads
        deadline = time.monotonic() + DEADLINE_S
        while receiver.stats()["unique"] < total and time.monotonic() < deadline:
            time.sleep(0.02)
        after, ended = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        delivered = receiver.stats()["unique"]
        user = (after.ru_utime - before.ru_utime) * 1000 / total
        system = (after.ru_stime - before.ru_stime) * 1000 / total
        print(f"{total} executions, {delivered} delivered, answers {sorted(set(answers))}:"
              f" {total / (ended - started):.0f}/s, CPU per execution {user + system:.2f} ms"
              f" (user {user:.2f} + system {system:.2f}); request threads {sum(sender_cpu) * 1000 / total:.3f} ms"
              f" per webhook")
        return 0 if delivered == total else 1
    finally:
        shutdown_app(app, grace=5)
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""`flask --app wsgi worker`: the worker processes of distributed mode (engine/worker.py, app/fleet.py)."""
from __future__ import annotations

import os
import signal
import sys
import threading

import click
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext

from app.services import Services

PARENT_POLL = 1.0  # seconds between checks that the supervising process still lives


@click.command("worker")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes to start, each started again if it dies.")
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Executions each process runs at once.  [default: IPAAS_WORKERS]")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535),
              help="Serve the processes' summed Prometheus metrics at http://0.0.0.0:PORT/metrics; "
                   "0 serves none.  [default: IPAAS_WORKER_METRICS_PORT, else 0]")
@click.option("--child", is_flag=True, hidden=True, help="Run one worker in this process (used by the parent).")
@with_appcontext
def worker(processes: int, threads: int | None, metrics_port: int | None, child: bool) -> None:
    """Run executions from the broker at IPAAS_BROKER_URL (distributed mode).

    SIGTERM or SIGINT: take no more executions, let running ones finish for IPAAS_GRACEFUL_TIMEOUT
    seconds, hand the rest back to the queue for another worker, and exit 0."""
    config = current_app.config
    if not config["BROKER_URL"]:
        raise click.ClickException("the worker needs IPAAS_BROKER_URL=redis://HOST[:PORT][/DB]")
    services: Services = current_app.extensions["ipaas"]
    if child:
        _run_one(services, threads)
        return
    from app.fleet import Fleet

    services.store.shutdown()  # this process only supervises; the children open their own connections
    info = click.get_current_context().find_object(ScriptInfo)
    app_args = ["--app", info.app_import_path] if info and info.app_import_path else []
    command = [sys.executable, "-m", "flask", *app_args, "worker", "--child"]
    if threads:
        command += ["--threads", str(threads)]
    port = config["WORKER_METRICS_PORT"] if metrics_port is None else metrics_port
    fleet = Fleet(command, processes, grace=float(config["GRACEFUL_TIMEOUT"]), metrics_port=port)
    sys.exit(fleet.run())


def _run_one(services: Services, threads: int | None) -> None:
    from app.engine import create_worker

    engine = create_worker(services.store, current_app.config, services.metrics, threads=threads,
                           tracing=services.tracing)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    engine.start()
    while not stop.wait(PARENT_POLL):
        if os.getppid() != parent:  # the supervising process was killed: nobody would stop this one
            break
    engine.shutdown(float(current_app.config["GRACEFUL_TIMEOUT"]))
    services.store.shutdown()

"""Keep N worker processes running, as gunicorn's master does for web processes: start them, start again
one that dies, forward SIGTERM/SIGINT and wait for them to finish, and serve their metrics.

Metrics: every child writes its samples to a Prometheus multiprocess directory private to this command
(a fresh temporary one, removed at exit, so a web server's files are never summed in), and with a
metrics port this process serves their sum at http://HOST:PORT/metrics (prometheus_client's
MultiProcessCollector, the same mode gunicorn.conf.py sets up for the web processes)."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Sequence

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between checks of the children
RESTART_DELAY = 1.0  # seconds at least between two starts of one slot, so a crashing child cannot spin
KILL_MARGIN = 10.0  # seconds past the grace period before a child that has not exited is SIGKILLed


class Fleet:
    def __init__(self, command: Sequence[str], count: int, *, grace: float, metrics_port: int = 0,
                 metrics_host: str = "0.0.0.0"):
        self._command = list(command)
        self._count = count
        self._grace = grace
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._stop = threading.Event()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT, then stop every child (SIGTERM, SIGKILL after the grace); 0."""
        directory = tempfile.mkdtemp(prefix="ipaas-worker-prom-")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        server = self._serve_metrics(directory)
        try:
            children = [self._spawn(env) for _ in range(self._count)]
            started = [time.monotonic()] * self._count
            while not self._stop.wait(POLL):
                for slot, child in enumerate(children):
                    if child.poll() is None or time.monotonic() - started[slot] < RESTART_DELAY:
                        continue
                    log.warning("worker process exited, starting another",
                                extra={"data": {"pid": child.pid, "exit_code": child.returncode}})
                    multiprocess.mark_process_dead(child.pid, directory)
                    children[slot], started[slot] = self._spawn(env), time.monotonic()
            self._stop_all(children)
        finally:
            if server is not None:
                server.shutdown()
            shutil.rmtree(directory, ignore_errors=True)
        return 0

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen:
        child = subprocess.Popen(self._command, env=env, stdin=subprocess.DEVNULL)
        log.info("worker process started", extra={"data": {"pid": child.pid}})
        return child

    def _stop_all(self, children: list[subprocess.Popen]) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + KILL_MARGIN
        for child in children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process did not stop in time, killing it", extra={"data": {"pid": child.pid}})
                child.kill()
                child.wait()
        log.info("worker processes stopped", extra={"data": {"count": len(children)}})

    def _serve_metrics(self, directory: str):
        if not self._metrics_port:
            return None
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        server, _ = start_http_server(self._metrics_port, addr=self._metrics_host, registry=registry)
        log.info("serving worker metrics", extra={"data": {"port": self._metrics_port}})
        return server

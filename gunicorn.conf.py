"""gunicorn settings for the ipaas API: `gunicorn -c gunicorn.conf.py wsgi:app` from the project root.

Environment: IPAAS_BIND (or PORT), IPAAS_PROCESSES, IPAAS_THREADS, IPAAS_GRACEFUL_TIMEOUT,
IPAAS_REUSE_PORT (auto, true, false: below), IPAAS_LOG_LEVEL, IPAAS_START_ENGINE (default true in the
workers), PROMETHEUS_MULTIPROC_DIR, and
the app's other IPAAS_* settings, which the workers read. Any other gunicorn setting can be
overridden without editing this file through GUNICORN_CMD_ARGS or the command line, which gunicorn
applies after it.

Shutdown, as gunicorn 27's gthread worker does it (read in gunicorn/arbiter.py, workers/gthread.py):
- SIGTERM to the master: it closes the listening sockets, sends SIGTERM to every worker and SIGKILLs
  those still alive graceful_timeout later, then exits 0. A worker stops accepting, lets in-flight
  requests finish (kept-alive connections linger 2 s at most), then runs worker_exit, where the
  engine drains. Both phases share the master's one deadline: see _engine_grace.
- SIGINT/SIGQUIT: quick shutdown; the worker calls worker_int and exits at once.
- SIGKILL to the master alone: each worker sees its parent change within a second, drains like
  on SIGTERM, runs worker_exit and exits; nobody SIGKILLs it, and it holds the port until it is
  done, so stop the whole process group (or wait for the old workers) before starting again.
- worker_exit can also run in the master (a worker that vanished before a signal reached it):
  that copy of the worker never loaded the app, so it has no `wsgi`.

Reload (HUP to the master) loads new code: the master re-reads this file, forks new workers, which
import `app` afresh (the master never imports it: it only needs serving/, which a HUP does not
reload), and stops the old ones as SIGTERM does: their requests are answered, their running
executions finish within graceful_timeout or are handed back and adopted by the new workers. Why
gunicorn >= 27: serving/worker.py, after the upstream reports it looked into.

Listening (serving/listeners.py): the master's one socket, shared by the workers, which stays open
throughout a reload, so no connection is refused or reset; or, with reuse_port (SO_REUSEPORT), a socket
per worker, over which the kernel spreads new connections evenly. A reload is only safe then with the
sysctl net.ipv4.tcp_migrate_req=1, which moves a closing socket's queued connections to a live one, and
with a stopping worker closing its socket only once a new one listens (serving/worker.py).
IPAAS_REUSE_PORT=auto (the default) turns reuse_port on exactly when the sysctl is 1; true/false force
it. The choice is made once, at start: a HUP keeps it (on_reload). With reuse_port the master refuses
a port that something listens on already (on_starting), which SO_REUSEPORT would let it share.
"""
from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

from gunicorn.glogging import Logger


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


# Prometheus multiprocess mode must be on before anything imports prometheus_client: it picks its
# value class at import time. The workers import it (with app) after fork, and --check-config loads
# the app in this process without on_starting, so the variable is set and the directory made here;
# on_starting empties it.
def _remove_directory(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # workers inherit atexit handlers through fork
        shutil.rmtree(path, ignore_errors=True)


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ipaas-prom-")
    # atexit rather than on_exit: --check-config and a failed start never reach on_exit.
    atexit.register(_remove_directory, os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid())
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Not `app`: the master must not import it (see the top). Imported rather than named as strings in
# logconfig_dict, so that a failing import stops gunicorn with its own traceback.
from serving import listeners, logformat  # noqa: E402
from serving.worker import JsonErrorWorker  # noqa: E402

bind = [address.strip() for address in os.environ.get("IPAAS_BIND", "").split(",") if address.strip()] \
    or [f"0.0.0.0:{_env_int('PORT', 8080)}"]
# A socket per worker, balanced by the kernel, when a reload cannot reset connections (see the top).
reuse_port = listeners.reuse_port(os.environ.get("IPAAS_REUSE_PORT"))

# One process per core of the 2-core host: gthread threads already overlap the I/O-bound work
# (webhook acks, action HTTP calls), and each process adds its own engine pool, queue and SQLite
# writer, so more processes mean more write contention, not more throughput. A fixed default, not
# os.cpu_count(), which reports the host's cores inside a CPU-limited container.
workers = _env_int("IPAAS_PROCESSES", 2)
worker_class = JsonErrorWorker  # gthread whose own error responses (414, 431, 400) are JSON
threads = _env_int("IPAAS_THREADS", 8)  # concurrent requests per process; ?wait= holds one for <= 30 s

# Time, from SIGTERM, for in-flight requests and then running executions to finish (see the top).
graceful_timeout = _env_int("IPAAS_GRACEFUL_TIMEOUT", 30)
# The gthread main loop heartbeats every second however long requests take, so this only catches a
# wedged process. It must exceed the silent time of worker_exit (the engine drain, < graceful_timeout),
# or a worker leaving on HUP or TTOU would be aborted halfway.
timeout = graceful_timeout + 30
# Idle wait for the next request on a kept-alive connection: the Go server's 60 s IdleTimeout, so a
# proxy or sender pool can reuse connections across bursts (a load balancer in front should idle
# out first, below 60 s). Idle connections cost a socket on the poller, not a thread, and a stopping
# worker closes them after 2 s. gthread also lets a new connection that has sent nothing wait
# 5 s + keepalive; worker_connections (1000 per process) bounds how many may do so.
keepalive = 60

# Go's MaxHeaderBytes caps the whole header block at 1 MB. gunicorn caps the request line at 8190
# bytes (its legal maximum, used here) and buffers at most limit_request_fields *
# (limit_request_field_size + 2) header bytes: 128 fields of up to 8190 bytes is that 1 MiB.
# The legal maxima (32768 fields) would let one request make a worker buffer 268 MB of headers.
limit_request_line = 8190
limit_request_fields = 128
limit_request_field_size = 8190
# A header named with underscores (X_Event_Type) cannot reach the app under its own name: WSGI
# spells every header HTTP_X_EVENT_TYPE, the same as X-Event-Type, so keeping it would let one
# header pose as the other. gunicorn's default ("drop", since 22.0) loses it without a word;
# "refuse" answers 400 ("Invalid HTTP header name") instead, so the sender learns to rename it.
header_map = "refuse"

preload_app = False  # the engine's threads and SQLite connections must be created after fork
max_requests = 0  # no worker recycling: restarting a worker interrupts its engine's executions
proc_name = "ipaas-api"
# The heartbeat file is touched every second: keep it on tmpfs, not on a possibly slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
# gunicorn 25+ opens a control socket at one per-user path ($HOME/.gunicorn/gunicorn.ctl) that a
# second instance (tests, a USR2 upgrade) unlinks and takes over; signals are all we use.
control_socket_disable = True

# Logging: every line is one JSON object with the fields of API.md. gunicorn.error propagates to
# the root logger, whose one handler is made here (create_app's logutils.configure sees it in each
# worker and adds the app's request and trace ids to it). gunicorn's access log is off: the app
# writes one JSON access line per request with request_id and data.duration_ms (app/api/requestlog.py).
loglevel = os.environ.get("IPAAS_LOG_LEVEL", "info").strip().lower() or "info"
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": logformat.Formatter}},
    "filters": {"service": {"()": logformat.ServiceFilter}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                   "formatter": "json", "filters": ["service"]},
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        # No level here, so gunicorn's own loglevel (--log-level wins over IPAAS_LOG_LEVEL) applies.
        "gunicorn.error": {"handlers": [], "propagate": True},
    },
}


class NoAccessLogger(Logger):
    """gunicorn's logger minus its access log. With logconfig_dict set, gunicorn would build the
    access atoms of every request (a measurable cost at thousands of webhooks/s) only to drop them."""

    def access(self, resp, req, environ, request_time) -> None:
        return None


logger_class = NoAccessLogger

# Seconds kept back from the master's SIGKILL deadline to close the store and exit.
SHUTDOWN_MARGIN = 3.0


def on_starting(server) -> None:
    """Give this run an empty Prometheus directory before any worker forks; refuse a taken port."""
    # With reuse_port nobody binds in the master, and the workers could join another server's sockets.
    # A re-executed master (USR2: master_pid is the old one) shares the port with the old one on purpose.
    if server.cfg.reuse_port and not server.master_pid:
        listeners.refuse_taken_addresses(server.cfg.address)
    server.log.info("listening on %s", "a socket per worker process (reuse_port)" if server.cfg.reuse_port
                    else "one socket shared by the worker processes")
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    # A given directory may hold the files of a previous run, whose counters would be summed in.
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)
    # A library's warning would otherwise be printed to stderr as a plain-text line.
    logging.captureWarnings(True)


def on_reload(server) -> None:
    """Keep the way of listening the master started with: it has no socket to share with reuse_port on."""
    started_with = not server.LISTENERS  # the master made the shared sockets at start, or none
    if server.cfg.reuse_port != started_with:
        # Say IPAAS_REUSE_PORT=auto and the sysctl changed since: new workers would bind beside the
        # master's socket (EADDRINUSE) or listen nowhere. Takes effect at the next restart.
        server.log.warning("reuse_port stays %s until a restart", started_with)
        server.cfg.set("reuse_port", started_with)


def child_exit(server, worker) -> None:
    """Drop the dead worker's live gauges (queue length, busy workers) from /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker) -> None:
    """Run executions in the workers only: the CLI and --check-config load the same app without."""
    os.environ.setdefault("IPAAS_START_ENGINE", "true")  # IPAAS_START_ENGINE=false: an API-only server


def post_worker_init(worker) -> None:
    """Note when SIGTERM arrives: the master SIGKILLs this worker graceful_timeout later."""
    handle_exit = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if getattr(worker, "ipaas_kill_at", None) is None:
            worker.ipaas_kill_at = time.monotonic() + worker.cfg.graceful_timeout
        handle_exit(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn had it: signal.signal() resets this


def worker_int(worker) -> None:
    """SIGINT/SIGQUIT ask for a quick exit: hand executions back instead of waiting for them."""
    worker.ipaas_quick_exit = True


def worker_abort(worker) -> None:
    """Log where every thread is stuck (a WORKER TIMEOUT), then exit without waiting."""
    worker.ipaas_quick_exit = True
    stacks = {f"{thread_id}": "".join(traceback.format_stack(frame))
              for thread_id, frame in sys._current_frames().items()}
    logging.getLogger("gunicorn.error").error("worker aborted, thread stacks in data",
                                              extra={"data": {"pid": worker.pid, "stacks": stacks}})


def _engine_grace(worker) -> float:
    if getattr(worker, "ipaas_quick_exit", False):
        return 0.0
    kill_at = getattr(worker, "ipaas_kill_at", None)
    if kill_at is None:  # the master died: nobody will SIGKILL this worker
        return max(0.0, worker.cfg.graceful_timeout - SHUTDOWN_MARGIN)
    # In-flight requests (a ?wait= webhook lasts up to 30 s) were drained first, from the same budget.
    return max(0.0, kill_at - time.monotonic() - SHUTDOWN_MARGIN)


def worker_exit(server, worker) -> None:
    """Stop the engine: running executions get what is left of the grace period, then are handed back."""
    if getattr(worker, "wsgi", None) is None:  # never loaded the app, or the master's copy
        return
    from app import shutdown_app

    shutdown_app(worker.wsgi, grace=_engine_grace(worker))

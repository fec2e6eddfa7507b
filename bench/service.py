"""The processes a scenario runs: the service under gunicorn, the bare-Flask baseline, the receiver.

Each is started in its own process group (start_new_session) and stopped through it, so nothing
outlives the harness; all listen on 127.0.0.1 only."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import procs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APP_ROOT = ROOT  # the project tree that is run (run.py --root: e.g. a `git archive` export of a commit)
VENV_BIN = Path(sys.executable).parent  # run.py is run with the project's .venv/bin/python
PAYLOAD = BENCH / "payload.json"

# Production settings (gunicorn.conf.py, API.md defaults) except: the log level (WARNING, see
# RESULTS.md), actions may reach 127.0.0.1, and the tenant rate limit is raised so that it admits
# every request while still costing what it costs (one bucket update per webhook).
SERVICE_ENV = {
    "IPAAS_ALLOW_PRIVATE_NETWORKS": "true",
    "IPAAS_LOG_LEVEL": "WARNING",
    "IPAAS_TENANT_RATE": "1000000",
    "IPAAS_TENANT_BURST": "1000000",
}
# The bench workflow's message: the receiver reads the execution id and created_at back from it. Any
# JSON payload renders (missing fields are empty; `or 0` because undefined / 100 would fail the action).
TEXT = ("Invoice {{ payload.data.object.number }} paid by {{ payload.data.object.customer.name }}"
        " ({{ (payload.data.object.total or 0) / 100 }} {{ payload.data.object.currency | upper }})"
        " bench-id={{ execution.id }} bench-at={{ execution.created_at }}")


class HttpError(Exception):
    pass


def call(port: int, method: str, path: str, body: Any = None, *, key: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    """One request on a fresh connection; returns (status, parsed JSON body or raw text)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode(errors="replace")


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 30.0) -> float:
    """Poll GET path every 20 ms until 200; returns the time it answered. Raises on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while starting")
        try:
            if call(port, "GET", path, timeout=1.0)[0] == 200:
                return time.time()
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"GET {path} on port {port} never answered 200 within {timeout} s")


class Group:
    """A command in its own process group, its output in files under `workdir`."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name, self.workdir = name, workdir
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def launch(self, command: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.runs += 1
        log = self.workdir / f"{self.name}-{self.runs}.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pgrp(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return procs.group_pids(self.pgrp) if self.proc else []

    def kill9(self) -> None:
        """SIGKILL the whole group at once (a machine crash), then wait until it is gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgrp, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, grace: float = 40.0) -> None:
        """SIGTERM the leader, wait up to `grace` s, then SIGKILL whatever is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"{self.name}-{self.runs}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class Receiver(Group):
    def __init__(self, workdir: Path) -> None:
        super().__init__("receiver", workdir)
        self.port = procs.free_port()

    def start(self) -> Receiver:
        self.launch([sys.executable, str(BENCH / "receiver.py"), "--port", str(self.port)], os.environ, ROOT)
        wait_ready(self.port, "/_stats", self.proc, 10)
        return self

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> Any:
        status, body = call(self.port, "GET", path)
        if status != 200:
            raise HttpError(f"receiver GET {path}: {status} {body}")
        return body

    def stats(self) -> dict[str, Any]:
        return self.get("/_stats")

    def reset(self) -> None:
        call(self.port, "POST", "/_reset", b"")

    def hold(self, on: bool) -> None:
        call(self.port, "POST", f"/_hold?on={int(on)}", b"")

    def wait_quiet(self, quiet: float = 1.0, limit: float = 120.0) -> int:
        """Wait until the delivery count has not moved for `quiet` s (at most `limit` s); return it."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.stats()["count"]
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.1)
        return last


class SqliteFile:
    """The store of a single-machine service: a SQLite file, read back read-only (WAL) by the harness.
    bench/cluster.py's PostgresDatabase has the same `url`, `counts` and `statuses`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def _rows(self, sql: str, params: tuple | list) -> list[tuple]:
        import sqlite3

        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def counts(self, workflow_id: str) -> dict[str, int]:
        """Executions of a workflow by status."""
        return dict(self._rows("SELECT status, COUNT(*) FROM executions WHERE workflow_id = ? GROUP BY status",
                               (workflow_id,)))

    def statuses(self, ids: list[str]) -> dict[str, str]:
        """The status of each of the given executions that exists."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(self._rows(f"SELECT id, status FROM executions WHERE id IN ({','.join('?' * len(chunk))})",
                                    chunk))
        return found


class Service(Group):
    """`gunicorn -c gunicorn.conf.py wsgi:app` from the project root, on a SQLite file in `workdir` unless
    given another `database` (bench/cluster.py: PostgreSQL)."""

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None, name: str = "ipaas",
                 database: Any = None) -> None:
        super().__init__(name, workdir)
        self.port = procs.free_port()
        self.database = database or SqliteFile(workdir / f"{name}.sqlite3")
        self.env = {key: value for key, value in os.environ.items() if key != "GUNICORN_CMD_ARGS"}
        self.env.update(SERVICE_ENV)
        self.env.update({"IPAAS_DATABASE_URL": self.database.url, "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.key: str | None = None
        self.started_at = self.ready_at = 0.0

    def create_user(self) -> str:
        """`flask --app wsgi users create`: the API key is the last line of its stdout."""
        env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        done = subprocess.run([str(VENV_BIN / "flask"), "--app", "wsgi", "users", "create", "bench@example.com",
                               "--tenant", "bench"], cwd=APP_ROOT, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"users create failed: {done.stderr[-2000:]}")
        self.key = done.stdout.strip().splitlines()[-1]
        return self.key

    def start(self, env: Mapping[str, str] | None = None) -> Service:
        """Start gunicorn (a fresh Prometheus directory each time) and wait for /healthz."""
        run_env = dict(self.env, **(env or {}))
        prom = self.workdir / f"prom-{self.name}-{self.runs + 1}"
        prom.mkdir()
        run_env.update({"PROMETHEUS_MULTIPROC_DIR": str(prom), "IPAAS_BIND": f"127.0.0.1:{self.port}"})
        if self.key is None:
            self.create_user()
        self.started_at = time.time()
        self.launch([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], run_env, APP_ROOT)
        try:
            self.ready_at = wait_ready(self.port, "/healthz", self.proc, 30)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self.log_tail()}") from None
        self.wait_workers()
        return self

    def wait_workers(self, timeout: float = 30.0) -> None:
        """/healthz answers as soon as one worker is up: wait until every worker answers too."""
        wanted = int(self.env.get("IPAAS_PROCESSES", "2"))
        deadline = time.monotonic() + timeout
        while len(procs.children(self.proc.pid)) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the last one forked may still be importing the app

    def worker_pids(self) -> list[int]:
        return procs.children(self.proc.pid)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        return call(self.port, method, path, body, key=self.key, timeout=timeout)

    def create_workflow(self, url: str, name: str = "bench") -> str:
        """A webhook -> slack_message workflow posting to `url` (the receiver); returns its id."""
        status, body = self.api("POST", "/api/workflows", {
            "name": name, "trigger_type": "webhook", "action_type": "slack_message",
            "config": {"webhook_url": url, "text": TEXT, "username": "ipaas-bench"},
        })
        if status != 201:
            raise HttpError(f"creating the workflow: {status} {body}")
        return body["id"]

    def webhook_url(self, workflow_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhooks/{workflow_id}"

    def counts(self, workflow_id: str) -> dict[str, int]:
        return self.database.counts(workflow_id)

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return self.database.statuses(ids)


class Baseline(Group):
    """bench/baseline_app.py under the same gunicorn settings as the service (2 gthread x8, keepalive 60)."""

    def __init__(self, workdir: Path, db_sync: str | None = None) -> None:
        super().__init__("baseline" + (f"-{db_sync.lower()}" if db_sync else ""), workdir)
        self.port = procs.free_port()
        self.db_sync = db_sync

    def start(self) -> Baseline:
        env = {key: value for key, value in os.environ.items() if key != "GUNICORN_CMD_ARGS"}
        if self.db_sync:
            env.update(BASELINE_DB=str(self.workdir / f"{self.name}.sqlite3"), BASELINE_SYNC=self.db_sync)
        self.launch([str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "8", "--keep-alive", "60",
                     "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", "--chdir", str(BENCH),
                     "baseline_app:app"], env, ROOT)
        wait_ready(self.port, "/healthz", self.proc, 30)
        time.sleep(0.5)
        return self

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ipaas-bench-"))

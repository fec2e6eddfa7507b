"""Run the real service under gunicorn (or its CLI) in tests, on a free port and a fresh SQLite file
(or the PostgreSQL database that an `IPAAS_DATABASE_URL` in the env passed in names).

    with GunicornServer({"IPAAS_WORKERS": "2"}, tmp_path, processes=2) as server:
        response = server.request("GET", "/healthz")
        assert server.logs()[0]["service"] == "ipaas-api"

A restart is a new GunicornServer on the same tmp_path (same database), started after the first one
stopped: `server.kill9()` then `GunicornServer(server.env, tmp_path).start()`, or `server.respawn()`.
Every server runs in its own process group and is killed with it at exit, even if a test fails.

The end-to-end helpers at the bottom (create_user, ServerStack, create_http_workflow, send_webhook,
wait_for_executions, query_database, ...) drive the service only through its CLI, HTTP API and
database file."""
from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence
from urllib.parse import urlencode

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET_KEY = os.environ.get("IPAAS_SECRET_KEY") or Fernet.generate_key().decode()
READY_TIMEOUT = 20.0
_LIVE: set[GunicornServer] = set()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(tmp_path: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Return os.environ plus this test's database, Prometheus directory and `env` (None unsets)."""
    merged: dict[str, str | None] = {key: value for key, value in os.environ.items() if key != "GUNICORN_CMD_ARGS"}
    merged.update({
        "IPAAS_DATABASE_URL": f"sqlite:///{tmp_path}/ipaas.sqlite3",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "PYTHONUNBUFFERED": "1",
        # A key of the test run's own, so no server writes one into the project's instance folder.
        "IPAAS_SECRET_KEY": TEST_SECRET_KEY,
    })
    merged.update(env or {})
    return {key: value for key, value in merged.items() if value is not None}


def run_cli(args: Sequence[str], env: Mapping[str, str | None] | None, tmp_path: Path, *,
            input: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `flask --app wsgi ARGS` against the test's database; never raises on a non-zero exit."""
    cli_env = service_env(tmp_path, env)
    # Not a gunicorn worker: its samples must not be summed into a running server's /metrics.
    cli_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=cli_env,
                          input=input, capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return its value; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _proc_table() -> Iterator[tuple[int, str, int, int]]:
    """Yield (pid, state, ppid, pgrp) of every process, from /proc/<pid>/stat."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        yield int(entry.name), state, int(ppid), int(pgrp)


class GunicornServer:
    """`gunicorn -c gunicorn.conf.py wsgi:app` on 127.0.0.1, its logs in files under tmp_path."""

    def __init__(self, env: Mapping[str, str | None] | None, tmp_path: Path, processes: int = 1, threads: int = 4,
                 extra_args: Sequence[str] = (), *, port: int | None = None, root: Path = ROOT) -> None:
        self.tmp_path = Path(tmp_path)
        self.root = Path(root)  # the project directory gunicorn runs from (a copy, to test a reload)
        self.port = port or free_port()
        self.processes, self.threads, self.extra_args = processes, threads, tuple(extra_args)
        self.env = dict(env or {})
        self.full_env = service_env(self.tmp_path, {
            "IPAAS_PROCESSES": str(processes), "IPAAS_THREADS": str(threads), **self.env,
            "IPAAS_BIND": f"127.0.0.1:{self.port}",
        })
        run = 1
        while (self.tmp_path / f"gunicorn-{run}.stderr").exists():
            run += 1
        self.stdout_path = self.tmp_path / f"gunicorn-{run}.stdout"
        self.stderr_path = self.tmp_path / f"gunicorn-{run}.stderr"
        self.stderr_path.touch()  # claims the run number
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT) -> GunicornServer:
        """Launch gunicorn and wait until GET /healthz answers 200."""
        assert self.proc is None, "already started: use respawn() for a new server"
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *self.extra_args, "wsgi:app"]
        with open(self.stdout_path, "ab") as stdout, open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(command, cwd=self.root, env=self.full_env, stdin=subprocess.DEVNULL,
                                         stdout=stdout, stderr=stderr, start_new_session=True)
        _LIVE.add(self)
        try:
            wait_until(self._ready, timeout, "GET /healthz never answered 200")
        except AssertionError as error:
            self.kill9()
            raise AssertionError(f"{error}; gunicorn exit code {self.proc.returncode}, log tail:\n"
                                 f"{self.log_tail()}") from None
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode} while starting")
        try:
            return self.request("GET", "/healthz", timeout=1.0).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def __enter__(self) -> GunicornServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def master_pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self) -> None:
        """Send SIGHUP to the master: gunicorn starts new workers and stops the old ones."""
        self.proc.send_signal(signal.SIGHUP)

    def worker_pids(self) -> list[int]:
        """Return the pids of the master's live children (the workers)."""
        return sorted(pid for pid, state, ppid, _ in _proc_table() if ppid == self.master_pid and state != "Z")

    def listening_sockets(self) -> int:
        """Count the sockets listening on the server's port: the master's one, or one per worker (reuse_port)."""
        port = f":{self.port:04X}"
        with open("/proc/thread-self/net/tcp") as table:  # this thread's network namespace (tests/netns.py)
            # "sl local_address rem_address st ...": addresses in hex, st 0A is LISTEN
            return sum(1 for line in table.readlines()[1:]
                       if line.split()[1].endswith(port) and line.split()[3] == "0A")

    def group_pids(self) -> list[int]:
        """Return the live processes of the server's process group: the master, workers, orphans."""
        return sorted(pid for pid, state, _, pgrp in _proc_table() if pgrp == self.master_pid and state != "Z")

    def terminate(self, timeout: float = 35.0) -> int:
        """SIGTERM the master and return its exit code; on timeout kill the group and raise."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise
        finally:
            self._reap_group()

    def kill9(self) -> None:
        """SIGKILL the master and its workers at once (the process group), like a machine crash."""
        if self.proc is None:
            return
        try:
            if self.group_pids():
                os.killpg(self.master_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        """Wait for orphaned workers to go, so nothing outlives the server object."""
        _LIVE.discard(self)
        if self.group_pids():
            try:
                wait_until(lambda: not self.group_pids(), 10.0, "processes left in the group")
            except AssertionError:
                os.killpg(self.master_pid, signal.SIGKILL)
                wait_until(lambda: not self.group_pids(), 5.0, "processes survive SIGKILL")

    def close(self) -> None:
        """Stop the server whatever its state: SIGTERM, then SIGKILL for whatever is left."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(int(self.full_env.get("IPAAS_GRACEFUL_TIMEOUT", 30)) + 5)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()

    def respawn(self, env: Mapping[str, str | None] | None = None, **overrides: Any) -> GunicornServer:
        """Start a new server on this one's database and port (stop this one first); kwargs override.

        Use it as a context manager (`with server.respawn() as again:`) so that it is stopped too."""
        settings = {"processes": self.processes, "threads": self.threads, "extra_args": self.extra_args,
                    "port": self.port, "root": self.root, **overrides}
        return GunicornServer(self.env if env is None else env, self.tmp_path, **settings).start()

    # -- HTTP ------------------------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
        """Send one request on a new connection; a dict or list body is sent as JSON."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()  # http.client would encode a str as Latin-1
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    # -- logs ------------------------------------------------------------------------------------
    def raw_logs(self) -> list[str]:
        """Return every line written so far, stdout's then stderr's."""
        lines: list[str] = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                lines.extend(path.read_text(errors="replace").splitlines())
        return [line for line in lines if line.strip()]

    def logs(self, strict: bool = True) -> list[dict[str, Any]]:
        """Return the log lines parsed as JSON; a line that is not a JSON object raises, unless not strict."""
        records, bad = [], []
        for line in self.raw_logs():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(line)
        if bad and strict:
            raise AssertionError("log lines that are not JSON objects:\n" + "\n".join(bad[:20]))
        return records

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Return the first JSON log record matching `predicate`, waiting up to `timeout` s for it."""
        def find() -> dict[str, Any] | None:
            return next((record for record in self.logs(strict=False) if predicate(record)), None)

        try:
            return wait_until(find, timeout, "no matching log line")
        except AssertionError as error:
            raise AssertionError(f"{error}; log tail:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.raw_logs()[-lines:])



# -- end-to-end helpers: users, a test's servers, workflows and executions through the API ------------
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def database_path(tmp_path: Path) -> Path:
    """Return the SQLite file that servers and the CLI of this tmp_path use (unless their env names
    another IPAAS_DATABASE_URL)."""
    return Path(tmp_path) / "ipaas.sqlite3"


def query_database(tmp_path: Path, sql: str, params: Sequence[Any] = (), *,
                   url: str | None = None) -> list[tuple[Any, ...]]:
    """Run one query on the test's database in a read-only transaction (servers may be running): the
    SQLite file of tmp_path, or the PostgreSQL database at `url`. Placeholders are the driver's:
    `?` for SQLite, `%s` for PostgreSQL."""
    if url is not None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("query_database(url=...) takes a PostgreSQL URL; SQLite is found by tmp_path")
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.read_only = True
            return connection.execute(sql, params).fetchall()
    connection = sqlite3.connect(f"file:{database_path(tmp_path)}?mode=ro", uri=True, timeout=5.0)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


@dataclass(frozen=True)
class CliUser:
    """A user made by `users create`: its id and the API key printed alone on the last line."""

    user_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def create_user(tmp_path: Path, email: str, tenant: str, env: Mapping[str, str | None] | None = None) -> CliUser:
    """Create a user, its tenant if missing and the schema in the test's database (or the one `env`'s
    IPAAS_DATABASE_URL names), with the CLI."""
    created = run_cli(["users", "create", email, "--tenant", tenant], env, tmp_path)
    if created.returncode != 0:
        raise AssertionError(f"users create exited with {created.returncode}: {created.stderr}")
    user_id = re.search(r"created user (\S+)", created.stdout)
    return CliUser(user_id.group(1) if user_id else "", created.stdout.strip().splitlines()[-1])


class ServerStack:
    """The GunicornServers of one test, started with shared settings and all stopped by close()."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str | None] | None = None, **settings: Any) -> None:
        self.tmp_path, self.env, self.settings = Path(tmp_path), dict(env or {}), settings
        self.servers: list[GunicornServer] = []

    def start(self, env: Mapping[str, str | None] | None = None, **settings: Any) -> GunicornServer:
        """Start a server with the stack's env and settings, `env` and `settings` added over them."""
        server = GunicornServer({**self.env, **(env or {})}, self.tmp_path, **{**self.settings, **settings})
        self.servers.append(server)
        return server.start()

    def respawn(self, server: GunicornServer, **overrides: Any) -> GunicornServer:
        """Start a stopped server again, on its database and port."""
        self.servers.append(server.respawn(**overrides))
        return self.servers[-1]

    def close(self) -> None:
        """Stop every server, newest first."""
        for server in reversed(self.servers):
            server.close()

    def __enter__(self) -> ServerStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def create_http_workflow(server: GunicornServer, auth: Mapping[str, str], url: str, **config: Any) -> str:
    """Create a webhook workflow whose http_request action POSTs {"execution": <its id>} to `url`."""
    config = {"url": url, "body": {"execution": "{{ execution.id }}"}, **config}
    response = server.request("POST", "/api/workflows", headers=auth, body={
        "name": "forward", "trigger_type": "webhook", "action_type": "http_request", "config": config})
    if response.status != 201:
        raise AssertionError(f"POST /api/workflows answered {response.status}: {response.body!r}")
    return response.json()["id"]


def send_webhook(server: GunicornServer, workflow_id: str, query: str = "", **kwargs: Any) -> Response:
    """POST a small JSON event to the workflow's public webhook URL (`query` like "?wait=5")."""
    return server.request("POST", f"/api/webhooks/{workflow_id}{query}", body={"event": "order.created"}, **kwargs)


def accept_webhook(server: GunicornServer, workflow_id: str, **kwargs: Any) -> str:
    """Send a webhook that must be accepted (202); return its execution id."""
    response = send_webhook(server, workflow_id, **kwargs)
    if response.status != 202:
        raise AssertionError(f"webhook answered {response.status}: {response.body!r}")
    return response.json()["execution_id"]


def send_webhooks_together(server: GunicornServer, workflow_id: str, count: int, **kwargs: Any) -> list[Response]:
    """Send `count` webhooks at one instant, each from its own thread on its own connection."""
    start = threading.Barrier(count, timeout=10)

    def send(_: int) -> Response:
        start.wait()
        return send_webhook(server, workflow_id, timeout=30, **kwargs)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(send, range(count)))


def delivery_counts(receiver: Any, path: str = "/hook") -> Counter[str]:
    """Count a tests.receiver.Receiver's requests to `path` by the execution id in their JSON body."""
    return Counter(recorded.json()["execution"] for recorded in receiver.requests(path))


def list_executions(server: GunicornServer, auth: Mapping[str, str], **filters: str) -> dict[str, dict[str, Any]]:
    """Return every execution `auth` may see (all pages of GET /api/executions), by id."""
    found: dict[str, dict[str, Any]] = {}
    query: dict[str, str] = {**filters, "limit": "200"}
    while True:
        response = server.request("GET", f"/api/executions?{urlencode(query)}", headers=auth)
        if response.status != 200:
            raise AssertionError(f"GET /api/executions answered {response.status}: {response.body!r}")
        page = response.json()
        found.update((item["id"], item) for item in page["items"])
        if page["next_cursor"] is None:
            return found
        query["cursor"] = page["next_cursor"]


def wait_for_executions(server: GunicornServer, auth: Mapping[str, str], ids: Collection[str], *,
                        statuses: Collection[str] = TERMINAL, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Poll the API until each execution in `ids` has one of `statuses`; return them by id."""
    deadline = time.monotonic() + timeout
    while True:
        found = list_executions(server, auth)
        if all(found.get(i, {}).get("status") in statuses for i in ids):
            return {i: found[i] for i in ids}
        if time.monotonic() > deadline:
            seen = Counter(found.get(i, {}).get("status", "missing") for i in ids)
            raise AssertionError(f"timed out after {timeout} s waiting for {sorted(statuses)}: {dict(seen)}")
        time.sleep(0.1)


def wait_for_execution(server: GunicornServer, auth: Mapping[str, str], execution_id: str, *,
                       statuses: Collection[str] = TERMINAL, timeout: float = 10.0) -> dict[str, Any]:
    """Poll GET /api/executions/<id> until its status is one of `statuses`; return the execution."""
    def settled() -> dict[str, Any] | None:
        response = server.request("GET", f"/api/executions/{execution_id}", headers=auth)
        execution = response.json() if response.status == 200 else {}
        return execution if execution.get("status") in statuses else None

    return wait_until(settled, timeout, f"execution {execution_id} never reached {sorted(statuses)}", 0.02)


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill9()

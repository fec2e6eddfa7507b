"""The processes of distributed mode beside service.Service: a private redis-server, a PostgreSQL database
of the harness's own, and `flask --app wsgi worker`.

    db = PostgresDatabase().create()            # ipaas_bench_<hex> on IPAAS_BENCH_POSTGRES_URL's server
    redis = Redis(workdir).start()              # redis-server on a free 127.0.0.1 port, nothing on disk
    web = Service(workdir, {"IPAAS_BROKER_URL": redis.url}, database=db).start()
    workers = Workers(workdir, web.env, db, processes=2).start()
    ...; workers.stop(); web.stop(); redis.stop(); db.drop()

The machine's shared Redis is never used, and only the harness's own database is created and dropped.
CPU per part is read from /proc, so the PostgreSQL figure needs the server on this machine: its backends
are recognised by the process title PostgreSQL sets ("postgres: [cluster: ]USER DATABASE HOST(PORT) ...")."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import procs
from service import APP_ROOT, VENV_BIN, Group

ADMIN_URL = os.environ.get("IPAAS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# The cluster's own processes (shared by every database): the postmaster and its background workers.
BACKGROUND = re.compile(r"^(?:\S*bin/postgres\b|postgres: (?:\S+: )?(?:checkpointer|background writer|walwriter|"
                        r"autovacuum launcher|logical replication launcher|stats collector|archiver)\b)")


class PostgresDatabase:
    """A database of the harness's own on the PostgreSQL server at ADMIN_URL (trust or password in the URL),
    with the same `url`, `counts` and `statuses` as service.SqliteFile."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"ipaas_bench_{secrets.token_hex(5)}"
        self.url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{self.name}"))
        self._conn = None
        self._own_pid = 0  # the harness's own backend, left out of the server's CPU
        self._title = re.compile(rf"^postgres: (?:\S+: )?(?:\S+ {self.name} |autovacuum worker {self.name}\b)")

    def create(self) -> PostgresDatabase:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        import psycopg

        self.close()
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self._own_pid = self._conn.info.backend_pid
        return self._conn.execute(sql, params).fetchall()

    def counts(self, workflow_id: str) -> dict[str, int]:
        """Executions of a workflow by status."""
        return dict(self._rows("SELECT status, count(*) FROM executions WHERE workflow_id = %s GROUP BY status",
                               (workflow_id,)))

    def statuses(self, ids: list[str]) -> dict[str, str]:
        """The status of each of the given executions that exists."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), 5000):
            found.update(self._rows("SELECT id, status FROM executions WHERE id = ANY(%s)", (ids[start:start + 5000],)))
        return found

    def queued(self) -> int:
        """The shared backlog as the web processes count it (Store.count_queued)."""
        return self._rows("SELECT count(*) FROM executions WHERE status = 'queued'")[0][0]

    def registered_pids(self) -> set[int]:
        """Pids of the worker processes heart-beating in the store (table `workers`)."""
        return {row[0] for row in self._rows("SELECT pid FROM workers")}

    def backend_pids(self) -> list[int]:
        """This database's server processes (client backends, autovacuum workers), the harness's own not."""
        return [pid for pid in _all_pids() if pid != self._own_pid and self._title.match(procs.cmdline(pid))]


def cluster_pids() -> list[int]:
    """The PostgreSQL server's shared processes (postmaster, WAL writer, checkpointer, ...)."""
    return [pid for pid in _all_pids() if BACKGROUND.match(procs.cmdline(pid))]


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


class Redis(Group):
    """`redis-server` on a free 127.0.0.1 port, no RDB or AOF: a broker of the harness's own."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)
        self.port = procs.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.launch([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                    os.environ, self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} never answered PING within {timeout} s")


class Workers(Group):
    """`flask --app wsgi worker --processes N [--threads M]` with the web server's environment (its store and
    broker), Prometheus files in the command's own temporary directory."""

    def __init__(self, workdir: Path, env: Mapping[str, str], database: PostgresDatabase, processes: int,
                 threads: int | None = None) -> None:
        super().__init__(f"workers-{processes}", workdir)
        self.env = {key: value for key, value in env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        self.database, self.processes, self.threads = database, processes, threads

    def start(self, timeout: float = 60.0) -> Workers:
        """Start the command; ready once each of its processes heart-beats in the store."""
        command = [str(VENV_BIN / "flask"), "--app", "wsgi", "worker", "--processes", str(self.processes)]
        if self.threads:
            command += ["--threads", str(self.threads)]
        self.launch(command, self.env, APP_ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker command exited with {self.proc.returncode}:\n{self.log_tail()}")
            children = set(procs.children(self.proc.pid))
            if len(children & self.database.registered_pids()) >= self.processes:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.processes} worker processes not registered within {timeout} s:\n{self.log_tail()}")

    def tree(self) -> list[int]:
        return procs.descendants(self.proc.pid) if self.proc else []

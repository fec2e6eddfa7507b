"""HUP to the gunicorn master: new code is loaded, every request is answered, every execution runs once.

Real gunicorn over sockets; the load is a bounded client sending webhooks from several threads, half
over kept-alive connections and half on a new connection each. Both ways of listening are loaded
(serving/listeners.py): the master's shared socket, and a socket per worker (reuse_port) with
net.ipv4.tcp_migrate_req=1, set in a private network namespace (tests/netns.py, needs root) so that the
machine's own setting and the tests beside this one are not touched. Without the sysctl the reuse_port
run sees 2-4 connections reset per run."""
from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.netns import NamespaceUnavailable, private_network, set_sysctl
from tests.receiver import Receiver
from tests.serverproc import (
    ROOT,
    GunicornServer,
    ServerStack,
    create_http_workflow,
    create_user,
    delivery_counts,
    wait_for_executions,
    wait_until,
)

from tests.services import require

pytestmark = pytest.mark.slow

GRACE = 10  # IPAAS_GRACEFUL_TIMEOUT of these servers
MIGRATE_REQ = "net/ipv4/tcp_migrate_req"


@contextlib.contextmanager
def migrating_network(migrate: str) -> Iterator[None]:
    """A private network namespace with net.ipv4.tcp_migrate_req=`migrate`; skip (or fail in CI) without one."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(private_network({MIGRATE_REQ: migrate}))
        except NamespaceUnavailable as exc:
            require("a private network namespace", f"{exc.strerror} (it needs root)")
        yield


@pytest.fixture(params=["shared socket", "reuse_port"])
def listening(request) -> Iterator[str]:
    """How the server listens; for reuse_port, IPAAS_REUSE_PORT=auto in a namespace that migrates requests."""
    if request.param == "shared socket":
        yield request.param
        return
    with migrating_network("1"):
        yield request.param


@pytest.fixture
def receiver(listening) -> Iterator[Receiver]:
    """The action's receiver, made after `listening`: in the server's network namespace."""
    with Receiver() as rx:
        yield rx


def project_copy(tmp_path: Path) -> Path:
    """A copy of what gunicorn runs (app, serving, wsgi.py, gunicorn.conf.py), free to edit."""
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("app", "serving"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    for name in ("wsgi.py", "gunicorn.conf.py"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


def new_generation(server: GunicornServer, old: set[int]) -> list[int]:
    """Wait until every worker of the server is a new one and none of `old` is left; return them."""
    def settled() -> list[int] | None:
        pids = server.worker_pids()
        return pids if len(pids) == server.processes and not old & set(pids) else None

    return wait_until(settled, GRACE + 15, "the old workers to be replaced")


def test_reload_hup_loads_changed_code_under_app(tmp_path):
    copy = project_copy(tmp_path)
    with GunicornServer({"IPAAS_GRACEFUL_TIMEOUT": str(GRACE)}, tmp_path, root=copy) as server:
        assert server.request("GET", "/reload-probe").status == 404
        old = set(server.worker_pids())
        with open(copy / "app" / "api" / "ops.py", "a") as module:
            module.write('\n\n@bp.get("/reload-probe")\ndef reload_probe():\n    return {"loaded": "new code"}\n')

        server.reload()
        new_generation(server, old)

        response = server.request("GET", "/reload-probe")
        assert response.status == 200 and response.json() == {"loaded": "new code"}


@dataclass
class WebhookLoad:
    """Threads POSTing webhooks until stopped or `max_requests` are sent; every outcome is recorded."""

    server: GunicornServer
    path: str
    clients: int = 4
    max_requests: int = 1500
    max_seconds: float = 90.0
    outcomes: list[tuple[int, str | None, bytes] | str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> WebhookLoad:
        self._deadline = time.monotonic() + self.max_seconds
        self._threads = [threading.Thread(target=self._client, args=(n % 2 == 0,), daemon=True)
                         for n in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def sent(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def stop(self) -> list[tuple[int, str | None, bytes] | str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return list(self.outcomes)

    def _more(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline and self.sent() < self.max_requests

    def _client(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while self._more():
            connection = connection or http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            try:
                connection.request("POST", self.path, body=b'{"event": "load"}',
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                outcome: tuple[int, str | None, bytes] | str = (
                    response.status, response.getheader("Retry-After"), response.read())
                reuse = keep_alive and not response.will_close
            except (OSError, http.client.HTTPException) as exc:
                outcome, reuse = f"{type(exc).__name__}: {exc}", False
            with self._lock:
                self.outcomes.append(outcome)
            if not reuse:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def test_reload_twice_under_load_answers_every_request_and_runs_each_execution_once(tmp_path, listening,
                                                                                    receiver):
    user = create_user(tmp_path, "ops@example.com", "acme")
    env = {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "IPAAS_GRACEFUL_TIMEOUT": str(GRACE),
           "IPAAS_REUSE_PORT": "false" if listening == "shared socket" else "auto"}
    with ServerStack(tmp_path, env, processes=2, threads=4) as stack:
        server = stack.start()
        sockets = 1 if listening == "shared socket" else server.processes
        assert server.listening_sockets() == sockets
        workflow_id = create_http_workflow(server, user.auth, receiver.url("/hook"))
        load = WebhookLoad(server, f"/api/webhooks/{workflow_id}").start()
        try:
            wait_until(lambda: load.sent() >= 50, 20, "the load to get going")
            for _ in range(2):
                old = set(server.worker_pids())
                server.reload()
                new_generation(server, old)
                before = load.sent()
                wait_until(lambda: load.sent() >= before + 50, 20, "the new workers to answer")
                assert server.listening_sockets() == sockets
        finally:
            outcomes = load.stop()

        failures = [outcome for outcome in outcomes if isinstance(outcome, str)]
        assert failures == []
        statuses = Counter(status for status, _, _ in outcomes)
        assert set(statuses) <= {202, 503}, statuses
        assert all(retry_after for status, retry_after, _ in outcomes if status == 503)
        accepted = [json.loads(body)["execution_id"] for status, _, body in outcomes if status == 202]
        assert len(accepted) >= 150
        executions = wait_for_executions(server, user.auth, accepted, timeout=60)
        assert Counter(e["status"] for e in executions.values()) == {"succeeded": len(accepted)}
        assert delivery_counts(receiver) == {execution_id: 1 for execution_id in accepted}


@pytest.mark.parametrize("before, after", [("0", "1"), ("1", "0")])
def test_reload_keeps_the_way_of_listening_the_server_started_with(tmp_path, before, after):
    # IPAAS_REUSE_PORT=auto follows the sysctl, which may change under a running server: its HUP must
    # neither bind beside the master's shared socket nor leave the new workers without one.
    with migrating_network(before):
        with GunicornServer({"IPAAS_GRACEFUL_TIMEOUT": str(GRACE)}, tmp_path, processes=2) as server:
            sockets = server.listening_sockets()
            assert sockets == (2 if before == "1" else 1)
            set_sysctl(MIGRATE_REQ, after)

            old = set(server.worker_pids())
            server.reload()
            new_generation(server, old)

            assert server.request("GET", "/healthz").status == 200
            assert server.listening_sockets() == sockets

"""Distributed mode, black-box: gunicorn web processes + `flask worker` processes + the store + a private
Redis, all real processes on 127.0.0.1, driven through the HTTP API.

Every scenario is bounded (tens to a few hundred webhooks, deadlines on every wait)."""
from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.engine.broker import QUEUE, ExecutionQueue
from tests.receiver import Receiver, Reply, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import (
    CliUser,
    GunicornServer,
    accept_webhook,
    create_http_workflow,
    delivery_counts,
    free_port,
    run_cli,
    send_webhook,
    wait_for_execution,
    wait_for_executions,
    wait_until,
)
from tests.services import postgres_url, redis_server, redis_url  # noqa: F401  (fixtures)
from tests.workerproc import WorkerCommand

GRACE = 5
REQUEUE_AFTER = 2  # seconds: the sweeper re-enqueues lost messages quickly in tests
DEAD_AFTER = 3  # seconds without a heartbeat before a worker process counts as dead


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request) -> dict[str, str]:
    """The store every process of a test shares: tmp_path's SQLite file (serverproc's default), or a fresh
    PostgreSQL database."""
    if request.param == "postgres":
        return {"IPAAS_DATABASE_URL": request.getfixturevalue("postgres_url")}
    return {}


# A stalled worker's adoption and a SIGTERM hand-back run on SQLite only: they pass on PostgreSQL too, but
# each PostgreSQL variant takes as long as its SQLite one, and these two are the slowest; the store's part
# of them (heartbeats, adopt_orphans, release_executions) is in the contract suite on all three stores.
sqlite_only = pytest.mark.parametrize("database_env", ["sqlite"], indirect=True)


@pytest.fixture
def env(database_env, redis_url) -> dict[str, str]:
    return {**database_env, "IPAAS_BROKER_URL": redis_url, "IPAAS_ALLOW_PRIVATE_NETWORKS": "true",
            "IPAAS_GRACEFUL_TIMEOUT": str(GRACE), "IPAAS_REQUEUE_AFTER": str(REQUEUE_AFTER),
            "IPAAS_WORKER_DEAD_AFTER": str(DEAD_AFTER), "IPAAS_HEARTBEAT_INTERVAL": "1",
            "IPAAS_QUEUE_SIZE": "1000", "IPAAS_RETRY_BASE_DELAY": "0.05"}


class Cluster:
    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path, self.env = tmp_path, env
        self.web = GunicornServer(env, tmp_path, processes=2, threads=8)
        self.workers: list[WorkerCommand] = []
        self.user: CliUser | None = None

    def start(self, workers: int = 2) -> Cluster:
        # Through the CLI on this cluster's store (which it also creates the schema of).
        created = run_cli(["users", "create", "ops@example.com", "--tenant", "acme"], self.env, self.tmp_path)
        assert created.returncode == 0, created.stderr
        self.user = CliUser("", created.stdout.strip().splitlines()[-1])
        self.web.start()
        if workers:
            self.add_workers(workers)
        return self

    def add_workers(self, processes: int, **kwargs) -> WorkerCommand:
        command = WorkerCommand(self.env, self.tmp_path, processes=processes, **kwargs)
        self.workers.append(command)
        return command.start()

    def close(self) -> None:
        for command in self.workers:
            command.kill9()
        self.web.close()


@pytest.fixture
def cluster(tmp_path, env) -> Iterator[Cluster]:
    stack = Cluster(tmp_path, env)
    try:
        yield stack
    finally:
        stack.close()


def queue_drained(url: str) -> bool:
    """Every message of the executions queue taken and acknowledged (Dramatiq's Redis layout: the queue
    list, and one ack set per consumer holding what it fetched and has not acknowledged)."""
    queue = ExecutionQueue(url)
    try:
        client = queue.client
        acks = [key for key in client.scan_iter("dramatiq:__acks__.*") if client.scard(key)]
        return client.llen(f"dramatiq:{QUEUE}") == 0 and not acks
    finally:
        queue.close()


def storm(cluster: Cluster, workflow_id: str, count: int, *, during=None, senders: int = 8) -> list[str]:
    """Send `count` webhooks from `senders` threads (calling `during()` once half are sent); the 202 ids."""
    accepted: list[str] = []

    def send(index: int) -> str | None:
        if during is not None and index == count // 2:
            during()
        response = send_webhook(cluster.web, workflow_id, timeout=30)
        assert response.status in (202, 503), response.body
        return response.json()["execution_id"] if response.status == 202 else None

    with ThreadPoolExecutor(max_workers=senders) as pool:
        for execution_id in pool.map(send, range(count)):
            if execution_id is not None:
                accepted.append(execution_id)
    return accepted


def metric_total(text: str, name: str, **labels: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.slow
def test_distributed_storm_runs_every_accepted_webhook_exactly_once(cluster, receiver, redis_url):
    cluster.start(workers=0)
    metrics_port = free_port()
    cluster.add_workers(2, args=("--metrics-port", str(metrics_port)))
    workflow_id = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/hook"))
    duplicates = ExecutionQueue(redis_url)

    def duplicate_every_message() -> None:  # each execution gets extra messages: both workers race for it
        for execution_id in list(delivery_counts(receiver)):
            duplicates.send(execution_id)

    ids = storm(cluster, workflow_id, 200, during=duplicate_every_message)
    for execution_id in ids[:50]:
        duplicates.send(execution_id)
        duplicates.send(execution_id)
    duplicates.close()

    assert len(ids) == 200
    done = wait_for_executions(cluster.web, cluster.user.auth, ids, timeout=60)
    assert Counter(e["status"] for e in done.values()) == {"succeeded": 200}
    wait_until(lambda: queue_drained(redis_url), 20, "every message acknowledged")
    assert delivery_counts(receiver) == Counter({execution_id: 1 for execution_id in ids})
    # The worker command serves both processes' metrics; the web's /metrics the shared backlog.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as scraped:
        worker_metrics = scraped.read().decode()
    assert metric_total(worker_metrics, "ipaas_executions_total", status="succeeded") == 200
    wait_until(lambda: metric_total(cluster.web.request("GET", "/metrics").body.decode(), "ipaas_backlog") == 0,
               5, "ipaas_backlog back to 0")


@pytest.mark.slow
def test_distributed_kill9_of_a_worker_mid_storm_loses_nothing(cluster, receiver):
    cluster.start(workers=0)
    workers = cluster.add_workers(2)
    workflow_id = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/hook"))
    receiver.respond("/hook", Reply(200, delay=0.05))  # executions in flight when the kill lands

    def kill_one() -> None:
        wait_until(lambda: len(receiver.requests("/hook")) >= 20, 20, "the workers started")
        os.kill(workers.children()[0], signal.SIGKILL)

    ids = storm(cluster, workflow_id, 200, during=kill_one)
    assert len(ids) == 200
    done = wait_for_executions(cluster.web, cluster.user.auth, ids, timeout=60)
    assert Counter(e["status"] for e in done.values()) == {"succeeded": 200}
    counts = delivery_counts(receiver)
    assert set(counts) == set(ids)  # at least once each; the killed worker's in-flight ones maybe twice
    wait_until(lambda: len(workers.children()) == 2, 10, "the fleet started another worker process")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_distributed_redis_lost_mid_storm_loses_nothing(cluster, receiver, redis_server, fault):
    cluster.start(workers=2)
    workflow_id = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/hook"))
    receiver.respond("/hook", Reply(200, delay=0.02))

    def lose_redis() -> None:
        if fault == "flushall":
            redis_server.flushall()
        else:
            redis_server.restart()

    ids = storm(cluster, workflow_id, 150, during=lose_redis)
    assert len(ids) == 150  # a 202 whatever Redis does: the row is the promise
    done = wait_for_executions(cluster.web, cluster.user.auth, ids, timeout=60)
    assert Counter(e["status"] for e in done.values()) == {"succeeded": 150}
    assert set(delivery_counts(receiver)) == set(ids)
    assert cluster.web.request("GET", "/readyz").json()["checks"]["broker"] == "ok"


@pytest.mark.slow
def test_distributed_cancel_from_the_web_stops_a_blocked_action_within_2s(cluster, receiver):
    cluster.start(workers=2)
    workflow_id = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/slow"), timeout=25)
    receiver.respond("/slow", Reply(hang=True))
    execution_id = accept_webhook(cluster.web, workflow_id)
    receiver.wait_for(1, timeout=10, path="/slow")  # the action is blocked in a worker process

    started = time.monotonic()
    response = cluster.web.request("POST", f"/api/executions/{execution_id}/cancel", headers=cluster.user.auth)
    assert response.status in (200, 202), response.body
    execution = wait_for_execution(cluster.web, cluster.user.auth, execution_id, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert execution["status"] == "cancelled"
    # The worker thread is free again: the next execution runs while the receiver still hangs.
    receiver.respond("/hook", Reply(200))
    second = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/hook"))
    wait_for_execution(cluster.web, cluster.user.auth, accept_webhook(cluster.web, second), timeout=10)


def one_worker_blocked_on_an_execution(cluster, receiver):
    """Start the web and one worker process, whose execution hangs at the receiver: (its fleet, execution id)."""
    cluster.start(workers=0)
    first = cluster.add_workers(1)
    workflow_id = create_http_workflow(cluster.web, cluster.user.auth, receiver.url("/slow"), timeout=25)
    receiver.respond("/slow", Reply(hang=True))
    execution_id = accept_webhook(cluster.web, workflow_id)
    receiver.wait_for(1, timeout=10, path="/slow")
    return first, execution_id


@pytest.mark.slow
@sqlite_only
def test_distributed_stalled_workers_execution_runs_again_on_a_live_one_within_30s(cluster, receiver):
    first, execution_id = one_worker_blocked_on_an_execution(cluster, receiver)
    cluster.add_workers(1)
    stalled = first.children()[0]
    os.kill(stalled, signal.SIGSTOP)  # alive (its pid exists) but silent: only its heartbeat tells
    try:
        started = time.monotonic()
        receiver.wait_for(2, timeout=30, path="/slow")  # run again by the live worker
        assert time.monotonic() - started < 30
        receiver.release()
        execution = wait_for_execution(cluster.web, cluster.user.auth, execution_id, timeout=20)
        assert execution["status"] == "succeeded"
    finally:
        os.kill(stalled, signal.SIGKILL)


@pytest.mark.slow
@sqlite_only
def test_distributed_sigterm_hands_a_running_execution_to_another_worker(cluster, receiver):
    first, execution_id = one_worker_blocked_on_an_execution(cluster, receiver)

    assert first.terminate(timeout=GRACE + 15) == 0  # past the grace period: handed back, exit 0
    assert any(r.get("message") == "worker stopped" and r["data"]["handed_back"] == 1 for r in first.logs())
    receiver.respond("/slow", Reply(200))
    receiver.release()
    cluster.add_workers(1)
    execution = wait_for_execution(cluster.web, cluster.user.auth, execution_id, timeout=20)
    assert execution["status"] == "succeeded"

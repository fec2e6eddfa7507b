"""Two gunicorn worker processes on one SQLite file: what one process does, the other must see.

Metrics, idempotency keys, cancels and rate limits go through state both processes share (the
Prometheus multiprocess directory, the store), never through one process's memory.

Which process accepts a connection is up to the kernel, and one process may take a whole burst. So
each process here holds one connection at a time (--worker-connections 1): while one is busy the
other accepts, and a burst is always split between them. That needs the shared listening socket
(IPAAS_REUSE_PORT=false): with a socket per process the kernel would queue a connection on the busy
one's. Each worker's own counters, read from its file in the multiprocess directory, show that both
processes answered."""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.receiver import Receiver, Reply, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import (
    CliUser,
    GunicornServer,
    ServerStack,
    accept_webhook,
    create_http_workflow,
    create_user,
    delivery_counts,
    query_database,
    send_webhook,
    send_webhooks_together,
    wait_for_execution,
    wait_for_executions,
    wait_until,
)

pytestmark = pytest.mark.slow

GRACE = 5  # IPAAS_GRACEFUL_TIMEOUT: bounds every shutdown
ONE_CONNECTION_EACH = ("--worker-connections", "1")
WEBHOOKS = "ipaas_webhooks_received_total"
EXECUTIONS = "ipaas_executions_total"


@pytest.fixture
def user(tmp_path: Path) -> CliUser:
    return create_user(tmp_path, "ops@example.com", "acme")


@pytest.fixture
def servers(tmp_path: Path, receiver: Receiver):
    """Servers of two worker processes allowed to call the receiver; all stopped at teardown."""
    env = {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "IPAAS_GRACEFUL_TIMEOUT": str(GRACE), "IPAAS_REUSE_PORT": "false"}
    stack = ServerStack(tmp_path, env, processes=2, extra_args=ONE_CONNECTION_EACH)
    yield stack
    receiver.release()  # a hanging action would hold each shutdown for its whole grace period
    stack.close()


def start_two_processes(servers: ServerStack, tmp_path: Path, env: dict[str, str] | None = None,
                        ) -> tuple[GunicornServer, list[int]]:
    """Start a server; return it and its worker pids once BOTH workers answer requests.

    The server is up when one worker answers; the other may still be loading the app. A webhook to
    an unknown workflow is a 404 that the answering process counts, and changes nothing else."""
    server = servers.start(env)
    workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), 5, "two worker processes")

    def both_answer() -> bool:
        send_webhooks_together(server, "wf_missing", 4)
        return all(webhooks_answered_by(tmp_path, pid)["404"] for pid in workers)

    wait_until(both_answer, 10, "both worker processes answering")
    return server, workers


def scrape(server: GunicornServer) -> dict[tuple[str, frozenset], float]:
    """GET /metrics once; return its samples by (name, labels)."""
    response = server.request("GET", "/metrics")
    assert response.status == 200, response.body
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.body.decode())
            for sample in family.samples}


def series(name: str, **labels: str) -> tuple[str, frozenset]:
    """The key of one sample in scrape()'s answer."""
    return name, frozenset(labels.items())


def webhooks_answered_by(tmp_path: Path, pid: int) -> Counter[str]:
    """Webhooks one worker process answered, by HTTP status, from its own Prometheus counter file."""
    counters = tmp_path / "prom" / f"counter_{pid}.db"
    if not counters.exists():  # the process has not loaded the app yet
        return Counter()
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(counters, scratch)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=scratch)
        return Counter({s.labels["status"]: int(s.value) for metric in registry.collect()
                        for s in metric.samples if s.name == WEBHOOKS})


def probe_which_process_answers(server: GunicornServer, tmp_path: Path, workers: list[int]) -> int:
    """Send a webhook to an unknown workflow (a 404, counted by the process that answers it); return that pid."""
    before = {pid: webhooks_answered_by(tmp_path, pid)["404"] for pid in workers}
    assert send_webhook(server, "wf_missing").status == 404
    [pid] = [pid for pid in workers if webhooks_answered_by(tmp_path, pid)["404"] > before[pid]]
    return pid


def test_metrics_sum_the_counts_of_both_worker_processes(servers, user, receiver, tmp_path):
    server, workers = start_two_processes(servers, tmp_path)
    assert len(server.group_pids()) == 3  # the master and its two workers
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))

    responses = send_webhooks_together(server, workflow, 30)

    assert [response.status for response in responses] == [202] * 30
    accepted = [response.json()["execution_id"] for response in responses]
    finished = wait_for_executions(server, user.auth, accepted, timeout=10)
    assert {e["status"] for e in finished.values()} == {"succeeded"}
    answered = {pid: webhooks_answered_by(tmp_path, pid)["202"] for pid in workers}
    assert all(answered.values()) and sum(answered.values()) == 30, answered  # both processes took some
    succeeded = series(EXECUTIONS, status="succeeded", action_type="http_request")
    # A process counts an execution just after recording it as succeeded: wait for the last count.
    wait_until(lambda: scrape(server).get(succeeded) == 30, 5, "30 succeeded executions in /metrics")
    for _ in range(8):  # each scrape is answered by either process, and each must sum both
        metrics = scrape(server)
        assert metrics.get(series(WEBHOOKS, status="202")) == 30
        assert metrics.get(succeeded) == 30


@pytest.mark.parametrize("header", ["Idempotency-Key", "webhook-id"])
def test_idempotency_key_runs_one_execution_across_processes(servers, user, receiver, tmp_path, header):
    server, workers = start_two_processes(servers, tmp_path)
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))

    responses = send_webhooks_together(server, workflow, 20, headers={header: "order-42"})

    assert [response.status for response in responses] == [202] * 20
    [execution_id] = {response.json()["execution_id"] for response in responses}
    assert all(webhooks_answered_by(tmp_path, pid)["202"] for pid in workers)  # both processes saw the key
    assert wait_for_execution(server, user.auth, execution_id)["status"] == "succeeded"
    assert query_database(tmp_path, "SELECT id FROM executions") == [(execution_id,)]
    assert delivery_counts(receiver) == Counter([execution_id])


def test_cancel_on_another_process_reaches_the_owner_through_the_store(servers, user, receiver, tmp_path):
    receiver.respond("/slow", Reply(hang=True))
    server, workers = start_two_processes(servers, tmp_path)
    workflow = create_http_workflow(server, user.auth, receiver.url("/slow"), timeout=30)

    with ThreadPoolExecutor(max_workers=1) as pool:
        # The process that takes this ?wait request owns its execution and, holding its one
        # connection, accepts no other until the execution ends.
        waiting = pool.submit(send_webhook, server, workflow, "?wait=8", timeout=15)
        [recorded] = receiver.wait_for(1, timeout=5, path="/slow")  # the owner is blocked in the action
        execution_id = recorded.json()["execution"]
        [(owner,)] = query_database(tmp_path, "SELECT w.pid FROM executions e JOIN workers w ON w.id = e.owner"
                                              " WHERE e.id = ?", (execution_id,))
        probed = probe_which_process_answers(server, tmp_path, workers)
        assert probed != owner and probed in workers  # so the cancel below lands on the other process too
        cancel = server.request("POST", f"/api/executions/{execution_id}/cancel", headers=user.auth)
        answered = time.monotonic()
        ended = waiting.result(timeout=5)  # the owner answers the ?wait as soon as the execution ends
        took = time.monotonic() - answered

    assert cancel.status == 202, cancel.body
    assert ended.status == 200, ended.body
    assert ended.json()["status"] == "cancelled"
    assert user.user_id and user.user_id in ended.json()["cancelled_by"]
    assert took < 2.0


def test_tenant_rate_limit_is_one_bucket_shared_by_both_processes(servers, user, receiver, tmp_path):
    other = create_user(tmp_path, "ops@globex.example", "globex")
    # Burst 10; a refill of one token per 10 s cannot add an 11th acceptance during the burst below.
    server, workers = start_two_processes(servers, tmp_path,
                                          {"IPAAS_TENANT_RATE": "0.1", "IPAAS_TENANT_BURST": "10"})
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))
    others_workflow = create_http_workflow(server, other.auth, receiver.url("/hook"))

    responses = send_webhooks_together(server, workflow, 30)

    assert Counter(response.status for response in responses) == {202: 10, 429: 20}
    for limited in (response for response in responses if response.status == 429):
        assert limited.headers["Retry-After"].isdigit() and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"]
    answered = {pid: webhooks_answered_by(tmp_path, pid) for pid in workers}
    answered = {pid: counts["202"] + counts["429"] for pid, counts in answered.items()}
    assert all(answered.values()), answered  # both processes drew from the one bucket
    accept_webhook(server, others_workflow)  # another tenant has its own bucket

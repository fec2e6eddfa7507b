"""The real service on PostgreSQL: the CLI and two gunicorn worker processes on one database."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.receiver import Receiver, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import (
    ServerStack,
    create_http_workflow,
    create_user,
    delivery_counts,
    query_database,
    send_webhooks_together,
    wait_for_executions,
    wait_until,
)

pytestmark = pytest.mark.slow

ONE_CONNECTION_EACH = ("--worker-connections", "1")  # a burst is split between the processes


def test_two_processes_on_postgres_run_every_webhook_once(tmp_path, postgres_url, receiver: Receiver):
    env = {"IPAAS_DATABASE_URL": postgres_url, "IPAAS_DB_POOL_SIZE": "4", "IPAAS_ALLOW_PRIVATE_NETWORKS": "true",
           "IPAAS_GRACEFUL_TIMEOUT": "5"}
    user = create_user(tmp_path, "ops@example.com", "acme", env=env)
    with ServerStack(tmp_path, env, processes=2, extra_args=ONE_CONNECTION_EACH) as stack:
        server = stack.start()
        assert server.request("GET", "/readyz").json()["checks"]["store"] == "ok"
        workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))

        accepted: list[str] = []
        for _ in range(5):  # the kernel may hand one burst's connections all to one process: a few bursts
            responses = send_webhooks_together(server, workflow, 30)
            assert [response.status for response in responses] == [202] * 30
            accepted += [response.json()["execution_id"] for response in responses]
            finished = wait_for_executions(server, user.auth, accepted, timeout=20)
            owners = query_database(tmp_path, "SELECT DISTINCT owner FROM executions", url=postgres_url)
            if len(owners) == 2:
                break
        assert {execution["status"] for execution in finished.values()} == {"succeeded"}
        assert delivery_counts(receiver) == Counter(accepted)  # each received exactly once
        registered = wait_until(lambda: query_database(tmp_path, "SELECT id FROM workers", url=postgres_url),
                                5, "registered worker processes")
        assert len(registered) == 2
        assert {owner for (owner,) in owners} == {worker for (worker,) in registered}  # both ran some
    assert not query_database(tmp_path, "SELECT id FROM workers", url=postgres_url)  # both left cleanly
    assert not query_database(tmp_path, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                                        " AND pid <> pg_backend_pid()", url=postgres_url)  # pools closed

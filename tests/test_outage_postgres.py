"""A PostgreSQL restart under the real service: the database is down for longer than the runner's old
patience (7.5 s) in the middle of a webhook load, then back, on a private cluster the test starts itself
(tests/pgcluster.py; never the machine's shared server). Run with -s to see the figures."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.outage_load import DRAIN_BOUND, WebhookLoad, check_outage, wait_terminal
from tests.pgcluster import PrivateCluster
from tests.receiver import Receiver, Reply, receiver  # noqa: F401 (a fixture)
from tests.serverproc import GunicornServer, create_http_workflow, create_user

pytestmark = pytest.mark.slow

DOWN_FOR = 9.0  # seconds: longer than the old patience, which left executions running for good
# psycopg_pool retries a failed connection after 1, 2, 4, 8 ... s (its AttemptWithBackoff), so the service
# may reach the server again up to about DOWN_FOR after it is back: only then can the store write.
POOL_RECONNECT = DOWN_FOR


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_postgres_restart_mid_load_loses_nothing_and_recovers_by_itself(
        cluster: PrivateCluster, tmp_path: Path, receiver: Receiver):
    receiver.respond("/hook", Reply(delay=0.01))
    env = {"IPAAS_DATABASE_URL": cluster.url, "IPAAS_DB_POOL_SIZE": "10", "IPAAS_ALLOW_PRIVATE_NETWORKS": "true",
           "IPAAS_WORKERS": "4", "IPAAS_GRACEFUL_TIMEOUT": "5"}
    user = create_user(tmp_path, "ops@example.com", "acme", env=env)
    with GunicornServer(env, tmp_path, processes=2, threads=8) as server:
        workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))
        with WebhookLoad(server, workflow) as load:
            load.wait_accepted(50)
            down_at = time.monotonic()
            cluster.stop("fast")  # ends every session at once, as a restart or a failover does
            load.wait_readyz(503, after=down_at, timeout=DOWN_FOR)
            time.sleep(max(0.0, down_at + DOWN_FOR - time.monotonic()))  # the outage itself: no event to wait for
            cluster.start()
            up_at = time.monotonic()
            before = load.accepted()
            wait_terminal(server, user.auth, before, timeout=DRAIN_BOUND + POOL_RECONNECT)
            drained_in = time.monotonic() - up_at
            load.wait_readyz(200, after=up_at, timeout=3)
            load.wait_accepted(20, after=up_at)  # and webhooks are accepted again
        figures = check_outage(server, user.auth, receiver, load, down_at=down_at, up_at=up_at)
    print(f"\nPostgreSQL down {DOWN_FOR:g} s: the {len(before)} executions accepted before it was back all terminal"
          f" {drained_in:.2f} s after (bound {DRAIN_BOUND + POOL_RECONNECT:g} s); {figures}")

"""A PostgreSQL restart under the real service: the database is down for longer than the runner's old
patience (7.5 s) in the middle of a webhook load, then back (tests/outage_load.py), on a private cluster
the test starts itself (tests/pgcluster.py; never the machine's shared server). Run with -s to see the
figures."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.outage_load import DRAIN_BOUND, run_outage
from tests.pgcluster import PrivateCluster
from tests.receiver import Receiver, receiver  # noqa: F401 (a fixture)

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
    figures = run_outage(tmp_path, receiver, {"IPAAS_DATABASE_URL": cluster.url, "IPAAS_DB_POOL_SIZE": "10"},
                         down_for=DOWN_FOR, break_store=lambda: cluster.stop("fast"),  # ends every session
                         mend_store=cluster.start, drain_bound=DRAIN_BOUND + POOL_RECONNECT)
    print(f"\nPostgreSQL down {DOWN_FOR:g} s: {figures}")

"""The real services the suite relies on are there and isolated per test (CI fails rather than skips)."""
from __future__ import annotations

import psycopg


def test_postgres_url_is_a_fresh_database_of_its_own(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        name = conn.execute("SELECT current_database()").fetchone()[0]
    assert tables == 0
    assert name.startswith("ipaas_test_")


def test_redis_server_is_private_and_survives_a_restart(redis_server, redis_url):
    client = redis_server.client()
    client.set("k", "v")
    assert redis_server.port != 6379
    redis_server.restart()
    assert redis_server.ping()
    assert redis_server.client().get("k") is None  # nothing kept on disk

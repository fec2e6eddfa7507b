"""Real PostgreSQL and Redis for the tests that need them, each test's own and cleaned up afterwards.

    def test_something(postgres_url, redis_server):
        store = create_store(postgres_url)          # a fresh database, dropped after the test
        redis_server.flushall(); redis_server.restart()   # a private redis-server on a free port

PostgreSQL: the server at IPAAS_TEST_POSTGRES_URL (default the machine's own, 127.0.0.1:5432, trust auth);
every test gets a database of its own, dropped (WITH FORCE) at teardown. Redis: one private `redis-server`
per test session on a free port, with nothing on disk, so tests that flush, kill or restart it touch nothing
else. A missing service skips with a reason naming it; with IPAAS_REQUIRE_SERVICES=1 (CI) it fails instead.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.serverproc import free_port

POSTGRES_ADMIN_URL = os.environ.get("IPAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START_TIMEOUT = 10.0


def require(service: str, why: str) -> None:
    """Skip (locally) or fail (CI: IPAAS_REQUIRE_SERVICES=1) a test whose service is missing."""
    message = f"{service} is not available: {why}"
    if os.environ.get("IPAAS_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (IPAAS_REQUIRE_SERVICES is set, so this is a failure, not a skip)")
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_connect():
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require("PostgreSQL", f"cannot connect to {urlsplit(POSTGRES_ADMIN_URL).netloc}: {exc}".strip())


def create_database() -> str:
    """Create an empty database on the test server and return its URL."""
    name = f"ipaas_test_{secrets.token_hex(6)}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(POSTGRES_ADMIN_URL, name)


def drop_database(url: str) -> None:
    """Drop a database made by create_database, closing its sessions first."""
    name = urlsplit(url).path.lstrip("/")
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped after the test."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@dataclass
class RedisServer:
    """A private redis-server (no persistence) that a test may flush, stop and start again."""

    port: int
    binary: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server at once (SIGKILL: whatever it held is gone, as after a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this test session, on a free port of 127.0.0.1."""
    binary = shutil.which("redis-server")
    if binary is None:
        require("Redis", "no redis-server on PATH")
    server = RedisServer(port=free_port(), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's private Redis, running and empty at the start of the test."""
    if not redis_server.ping():
        redis_server.restart()
    redis_server.flushall()
    return redis_server.url

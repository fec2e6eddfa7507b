"""Shared fixtures: an app on the memory store (fast) or on a real SQLite file, its client and CLI runner."""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet

from app import create_app, logutils, shutdown_app
from app.models import User, new_id, utcnow
from app.security.apikeys import issue_key
from app.store import MemoryStore, Store
from tests.services import postgres_url, redis_server, redis_url  # noqa: F401 (fixtures)


@dataclass
class Account:
    """A tenant's user and the headers that authenticate as them."""

    tenant_id: str
    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_account(store: Store, tenant: str = "acme", email: str | None = None) -> Account:
    now = utcnow()
    tenant_record = store.ensure_tenant(tenant, tenant_id=new_id("tn", now), now=now)
    user = store.create_user(User(id=new_id("usr", now), tenant_id=tenant_record.id,
                                  email=email or f"{new_id('u')}@{tenant}.example", created_at=now))
    return Account(tenant_id=tenant_record.id, user_id=user.id, key=issue_key(store, user, now=now))


TEST_SECRET_KEY = Fernet.generate_key().decode()


def build_app(store: Store, **config):
    settings = {"TESTING": True, "ALLOW_PRIVATE_NETWORKS": True, "LOG_LEVEL": "WARNING",
                "SECRET_KEY": TEST_SECRET_KEY, **config}
    return create_app(settings, store=store)


@pytest.fixture
def store() -> Store:
    return MemoryStore()


@pytest.fixture
def app(store):
    """An app without an execution engine: for the workflows API, auth, errors, CLI."""
    app = build_app(store)
    yield app
    shutdown_app(app, grace=0)


@pytest.fixture
def engine_app(store):
    """An app with a running thread-pool engine (2 workers, short retries)."""
    app = build_app(store, START_ENGINE=True, WORKERS=2, QUEUE_SIZE=10, RETRY_BASE_DELAY=0.01,
                    RETRY_MAX_DELAY=0.05, ENQUEUE_TIMEOUT=0.5)
    yield app
    shutdown_app(app, grace=5)


@pytest.fixture
def log_level() -> int:
    """The level from which `log_lines` reads; a module that needs debug lines overrides this fixture."""
    return logging.INFO


@pytest.fixture
def log_lines(log_level):
    """Read back, parsed, the JSON lines every logger wrote at `log_level` and above during the test."""
    stream = io.StringIO()
    handler = logutils.json_handler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(log_level)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def account(app) -> Account:
    return make_account(app.extensions["ipaas"].store)


@pytest.fixture
def other_account(app) -> Account:
    return make_account(app.extensions["ipaas"].store, tenant="globex")

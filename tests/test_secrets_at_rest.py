"""Secrets at rest, for real: a gunicorn server on a SQLite file, a receiver, the CLI with other keys.

The plaintext of a credential and of a workflow secret must appear nowhere in the database file, its
WAL, the logs, API answers or execution results; a start with keys that cannot decrypt what is stored
fails naming IPAAS_SECRET_KEY and changes nothing; `secrets rotate` moves every secret to the first key."""
from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app import create_app, shutdown_app
from app.store import SqliteStore, migrations
from tests.conftest import TEST_SECRET_KEY, make_account
from tests.receiver import Reply, receiver  # noqa: F401 (a fixture)
from tests.serverproc import (GunicornServer, create_user, database_path, query_database, run_cli,
                              wait_for_executions)

HEADER_VALUE = "hdr-Pl41ntext-9f8e7d"
SMTP_PASSWORD = "smtp-Pl41ntext-1a2b3c"
WORKFLOW_SECRET = "wf-Pl41ntext-secret-5d6e"
PLAINTEXTS = (HEADER_VALUE, SMTP_PASSWORD, WORKFLOW_SECRET)


def database_bytes(tmp_path: Path) -> bytes:
    path = database_path(tmp_path)
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def postgres_rows(url: str) -> bytes:
    """Every row of every table of the database, as PostgreSQL's own text of the row."""
    tables = [row[0] for row in query_database(
        Path("."), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", url=url)]
    text = [str(row[0]) for table in tables for row in query_database(Path("."), f'SELECT t::text FROM "{table}" t',
                                                                        url=url)]
    return "\n".join(text).encode()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """(the server's environment, a function returning what the database holds) for each store."""
    if request.param == "sqlite":
        return {}, lambda: database_bytes(tmp_path)
    url = request.getfixturevalue("postgres_url")
    return {"IPAAS_DATABASE_URL": url}, lambda: postgres_rows(url)


def stored_secrets(tmp_path: Path) -> list[tuple]:
    return query_database(tmp_path, "SELECT secret FROM workflows UNION ALL SELECT encrypted_data FROM credentials")


def signed(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def test_plaintext_secrets_appear_nowhere(tmp_path, receiver, database):
    env, stored = database
    user = create_user(tmp_path, "ann@acme.test", "acme", env=env)
    # The receiver echoes the credential's header back: the result must still not show it.
    receiver.respond("/api", Reply(200, body=f'{{"you_sent": "{HEADER_VALUE}"}}'))
    with GunicornServer({"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", **env}, tmp_path) as server:
        answers = []
        for kind, data in (("http_header", {"name": "X-Api-Key", "value": HEADER_VALUE}),
                           ("smtp", {"host": "127.0.0.1", "port": 25, "security": "none", "from": "a@b.test",
                                     "username": "bot", "password": SMTP_PASSWORD})):
            made = server.request("POST", "/api/credentials", headers=user.auth,
                                  body={"name": kind, "type": kind, "data": data})
            assert made.status == 201
            answers.append(made)
        credential_id = answers[0].json()["id"]
        workflow = server.request("POST", "/api/workflows", headers=user.auth, body={
            "name": "call", "trigger_type": "webhook", "secret": WORKFLOW_SECRET, "steps": [
                {"name": "main", "action_type": "http_request", "credential_id": credential_id,
                 "config": {"url": receiver.url("/api"), "body": {"n": 1}}}]})
        assert workflow.status == 201
        workflow_id = workflow.json()["id"]
        body = b'{"event": "paid"}'
        accepted = server.request("POST", f"/api/webhooks/{workflow_id}", body=body,
                                  headers=signed(body, WORKFLOW_SECRET))
        assert accepted.status == 202, accepted.body
        execution_id = accepted.json()["execution_id"]
        done = wait_for_executions(server, user.auth, [execution_id])[execution_id]
        assert done["status"] == "succeeded", done
        assert receiver.requests("/api")[0].headers["x-api-key"] == HEADER_VALUE  # added at send time
        assert HEADER_VALUE not in json.dumps(done["result"]) and "[REDACTED]" in done["result"]["body"]
        answers += [workflow, accepted,
                    server.request("GET", f"/api/executions/{execution_id}", headers=user.auth),
                    server.request("GET", f"/api/workflows/{workflow_id}", headers=user.auth),
                    server.request("GET", "/api/credentials", headers=user.auth),
                    server.request("GET", f"/api/credentials/{credential_id}", headers=user.auth)]
        logs = "\n".join(server.raw_logs())
    held = stored()
    assert b"paid" in held  # it reads the real rows: the payload is stored as it came
    for plaintext in PLAINTEXTS:
        assert plaintext.encode() not in held
        assert plaintext not in logs
        assert all(plaintext.encode() not in answer.body for answer in answers)


def test_keys_that_cannot_decrypt_refuse_to_start_and_rotate_moves_to_the_first_key(tmp_path):
    old = {"IPAAS_SECRET_KEY": TEST_SECRET_KEY}
    user = create_user(tmp_path, "ann@acme.test", "acme")
    with GunicornServer(old, tmp_path) as server:
        made = server.request("POST", "/api/credentials", headers=user.auth, body={
            "name": "k", "type": "http_basic", "data": {"username": "u", "password": "pw"}})
        assert made.status == 201
        assert server.request("POST", "/api/workflows", headers=user.auth, body={
            "name": "w", "trigger_type": "webhook", "action_type": "http_request", "secret": WORKFLOW_SECRET,
            "config": {"url": "https://example.com/x"}}).status == 201
    before = stored_secrets(tmp_path)
    new_key, stranger = Fernet.generate_key().decode(), Fernet.generate_key().decode()

    refused = run_cli(["workflows", "list"], {"IPAAS_SECRET_KEY": stranger}, tmp_path)
    assert refused.returncode != 0 and "IPAAS_SECRET_KEY" in refused.stderr
    assert stored_secrets(tmp_path) == before  # nothing overwritten

    rotated = run_cli(["secrets", "rotate"], {"IPAAS_SECRET_KEY": f"{new_key},{TEST_SECRET_KEY}"}, tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 stored secrets" in rotated.stdout
    after = stored_secrets(tmp_path)
    assert all(new != old_value for new, old_value in zip(after, before))
    for token, in after:
        Fernet(new_key.encode()).decrypt(token.encode())  # every secret now opens with the new key alone
    assert run_cli(["workflows", "list"], {"IPAAS_SECRET_KEY": new_key}, tmp_path).returncode == 0
    assert run_cli(["workflows", "list"], old, tmp_path).returncode != 0

    failed = run_cli(["secrets", "rotate"], {"IPAAS_SECRET_KEY": stranger}, tmp_path)
    assert failed.returncode != 0 and "IPAAS_SECRET_KEY" in failed.stderr
    assert stored_secrets(tmp_path) == after


def test_plaintext_secrets_from_before_encryption_are_encrypted_once_at_start(tmp_path):
    path = tmp_path / "legacy.sqlite3"
    legacy = sqlite3.connect(path)  # a database as wave 1 left it: every migration before 0004
    for migration in migrations.load("sqlite"):
        if migration.version < 4:
            legacy.executescript(migration.script)
            legacy.execute("INSERT INTO schema_version VALUES (?, '2024-01-01')", (migration.version,))
    legacy.commit()
    legacy.close()
    store = SqliteStore(str(path))
    store.init_schema()
    account = make_account(store)
    now = "2024-01-01T00:00:00.000000+00:00"
    store._db.current().execute(
        "INSERT INTO workflows (id, tenant_id, user_id, name, trigger_type, action_type, config, enabled, secret,"
        " created_at, updated_at) VALUES ('wf_old', ?, ?, 'old', 'webhook', 'http_request', ?, 1, ?, ?, ?)",
        (account.tenant_id, account.user_id, json.dumps({"url": "https://example.com/x"}),
         f"plain:{WORKFLOW_SECRET}", now, now))  # what migration 0004 makes of a wave-1 secret
    app = create_app({"TESTING": True, "SECRET_KEY": TEST_SECRET_KEY, "LOG_LEVEL": "WARNING"}, store=store)
    try:
        token = query_database_file(path, "SELECT secret FROM workflows WHERE id = 'wf_old'")
        assert Fernet(TEST_SECRET_KEY.encode()).decrypt(token.encode()).decode() == WORKFLOW_SECRET
        store.checkpoint()
        assert WORKFLOW_SECRET.encode() not in b"".join(
            p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("legacy.sqlite3"))
        assert store.rewrite_secrets(app.extensions["ipaas"].box.upgrade) == 0  # idempotent
        body = b'{"a": 1}'
        response = app.test_client().post("/api/webhooks/wf_old", data=body, headers=signed(body, WORKFLOW_SECRET))
        assert response.status_code != 401  # the signature still checks against the decrypted secret
        wrong = app.test_client().post("/api/webhooks/wf_old", data=body, headers=signed(body, "other"))
        assert wrong.status_code == 401
    finally:
        shutdown_app(app, grace=0)


def query_database_file(path: Path, sql: str) -> str:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()



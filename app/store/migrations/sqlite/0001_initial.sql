-- ipaas schema, migration 1 (SQLite). Applied by `flask --app wsgi init-db` and at start (app/store/sqlite.py).
-- Timestamps: TEXT, ISO-8601 UTC with microseconds ('2024-05-01T12:00:00.000000+00:00'), so they sort as text.
-- JSON fields (config, payload, headers, query, result): TEXT holding JSON.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL UNIQUE,  -- casefolded email: emails are unique case-insensitively
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    prefix     TEXT NOT NULL UNIQUE,
    key_hash   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE IF NOT EXISTS workflows (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    action_type  TEXT NOT NULL,
    config       TEXT NOT NULL,
    enabled      INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    secret       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    deleted_at   TEXT  -- soft delete: executions keep pointing at the row
);
CREATE INDEX IF NOT EXISTS workflows_by_tenant ON workflows (tenant_id, id);

CREATE TABLE IF NOT EXISTS executions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    workflow_id  TEXT NOT NULL REFERENCES workflows (id),
    status       TEXT NOT NULL
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    "trigger"    TEXT NOT NULL,
    payload      TEXT NOT NULL,
    headers      TEXT NOT NULL,
    query        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    result       TEXT,
    error        TEXT,
    cancelled_by TEXT,
    owner        TEXT,  -- id of the process (workers.id) whose engine holds it
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    replay_of    TEXT   -- no foreign key: the original may be purged first
);
CREATE INDEX IF NOT EXISTS executions_by_tenant ON executions (tenant_id, id);
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (tenant_id, workflow_id, id);
CREATE INDEX IF NOT EXISTS executions_by_owner ON executions (status, owner);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    workflow_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- Deferred: the key is claimed first, then the execution it names is inserted.
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_execution ON idempotency_keys (execution_id);

CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS rate_buckets (
    bucket     TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at TEXT NOT NULL
);

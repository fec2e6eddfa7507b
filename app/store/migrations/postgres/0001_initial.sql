-- ipaas schema, migration 1 (PostgreSQL): the tables of sqlite/0001_initial.sql in PostgreSQL types.
-- Applied by `flask --app wsgi init-db` and at start (app/store/_pg_db.py), in one transaction under an
-- advisory lock.
-- Timestamps: timestamptz. JSON fields (config, payload, headers, query, result): `json`, not `jsonb`:
-- they are user data that must come back as sent, and jsonb reorders keys, keeps only the last of
-- duplicate keys and refuses "\u0000" and unpaired surrogate escapes, which webhook payloads may carry.
-- Nothing queries inside them, so jsonb's indexing would buy nothing.

CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    email      text NOT NULL,
    email_key  text NOT NULL UNIQUE,  -- casefolded email: emails are unique case-insensitively
    created_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id),
    tenant_id  text NOT NULL REFERENCES tenants (id),
    prefix     text NOT NULL UNIQUE,
    key_hash   text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE TABLE IF NOT EXISTS workflows (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id),
    user_id      text NOT NULL REFERENCES users (id),
    name         text NOT NULL,
    trigger_type text NOT NULL,
    action_type  text NOT NULL,
    config       json NOT NULL,
    enabled      boolean NOT NULL,
    secret       text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz  -- soft delete: executions keep pointing at the row
);
CREATE INDEX IF NOT EXISTS workflows_by_tenant ON workflows (tenant_id, id);

CREATE TABLE IF NOT EXISTS executions (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id),
    workflow_id  text NOT NULL REFERENCES workflows (id),
    status       text NOT NULL
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    "trigger"    text NOT NULL,
    payload      json NOT NULL,
    headers      json NOT NULL,
    query        json NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    result       json,
    error        text,
    cancelled_by text,
    owner        text,  -- id of the process (workers.id) whose engine holds it
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    replay_of    text   -- no foreign key: the original may be purged first
);
CREATE INDEX IF NOT EXISTS executions_by_tenant ON executions (tenant_id, id);
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (tenant_id, workflow_id, id);
CREATE INDEX IF NOT EXISTS executions_by_owner ON executions (status, owner);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    workflow_id  text NOT NULL,
    key          text NOT NULL,
    -- Deferred: the key is claimed first, then the execution it names is inserted.
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_execution ON idempotency_keys (execution_id);

CREATE TABLE IF NOT EXISTS workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS rate_buckets (
    bucket     text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Migration 4 (SQLite): schedules, credentials, and workflow secrets encrypted at rest.

-- {"cron", "timezone", "active_from"} as JSON when trigger_type is 'schedule' (app/schedules.py).
-- Steps name credentials in their JSON (migration 3); there is no foreign key: the service refuses to delete
-- a credential in use, and a dangling id fails the execution with a clear error.
ALTER TABLE workflows ADD COLUMN schedule TEXT;
CREATE INDEX IF NOT EXISTS workflows_scheduled ON workflows (trigger_type, enabled) WHERE deleted_at IS NULL;

-- The slots a schedule has fired: the (workflow_id, slot) key lets exactly one process record the slot's
-- execution. Only each workflow's newest row is kept: it is the high-water mark below which nothing fires.
CREATE TABLE IF NOT EXISTS schedule_slots (
    workflow_id  TEXT NOT NULL,
    slot         TEXT NOT NULL,  -- the slot's instant, ISO-8601 UTC like every timestamp
    execution_id TEXT NOT NULL,
    PRIMARY KEY (workflow_id, slot)
);

CREATE TABLE IF NOT EXISTS credentials (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    type           TEXT NOT NULL,
    encrypted_data TEXT NOT NULL,  -- Fernet token of the JSON data, under IPAAS_SECRET_KEY
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credentials_by_tenant ON credentials (tenant_id, id);

-- Workflow secrets were stored as plaintext before this migration: mark them, so that the first start
-- with this code encrypts exactly these (app/security/crypto.py LEGACY_PREFIX) and nothing else.
UPDATE workflows SET secret = 'plain:' || secret WHERE secret IS NOT NULL;

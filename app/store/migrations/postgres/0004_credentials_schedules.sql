-- Migration 4 (PostgreSQL): schedules, credentials, and workflow secrets encrypted at rest; the same
-- tables as sqlite/0004_credentials_schedules.sql.

-- {"cron", "timezone", "active_from"} when trigger_type is 'schedule' (app/schedules.py).
ALTER TABLE workflows ADD COLUMN IF NOT EXISTS schedule json;
CREATE INDEX IF NOT EXISTS workflows_scheduled ON workflows (trigger_type, enabled) WHERE deleted_at IS NULL;

-- The slots a schedule has fired: the (workflow_id, slot) key lets exactly one process record the slot's
-- execution. Only each workflow's newest row is kept: it is the high-water mark below which nothing fires.
CREATE TABLE IF NOT EXISTS schedule_slots (
    workflow_id  text NOT NULL,
    slot         timestamptz NOT NULL,
    execution_id text NOT NULL,
    PRIMARY KEY (workflow_id, slot)
);

CREATE TABLE IF NOT EXISTS credentials (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id),
    name           text NOT NULL,
    type           text NOT NULL,
    encrypted_data text NOT NULL,  -- Fernet token of the JSON data, under IPAAS_SECRET_KEY
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS credentials_by_tenant ON credentials (tenant_id, id);

-- Workflow secrets were stored as plaintext before this migration: mark them, so that the first start
-- with this code encrypts exactly these (app/security/crypto.py LEGACY_PREFIX) and nothing else.
UPDATE workflows SET secret = 'plain:' || secret WHERE secret IS NOT NULL;

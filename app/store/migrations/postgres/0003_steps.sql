-- Migration 3 (PostgreSQL): workflows of several steps, and the step records of executions; the same
-- schema as sqlite/0003_steps.sql in PostgreSQL types (json, not jsonb, as in 0001: kept as sent).

-- JSON list of {"name", "action_type", "config", "condition", "credential_id"}; NULL for a workflow of one
-- plain step `main` (the wave-1 form, every row written before this migration), whose action_type and config
-- columns are the whole definition. Otherwise those two columns hold the first step's (they are NOT NULL).
ALTER TABLE workflows ADD COLUMN IF NOT EXISTS steps json;

-- One row per step of an execution that has run (or was copied by a replay that resumes), keyed by name.
-- result: what the API shows (secrets redacted, body cut); output: what templates of later steps see.
CREATE TABLE IF NOT EXISTS execution_steps (
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    name         text NOT NULL,
    position     integer NOT NULL,
    status       text NOT NULL
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    attempts     integer NOT NULL DEFAULT 0,
    started_at   timestamptz,
    finished_at  timestamptz,
    result       json,
    error        text,
    output       json,
    PRIMARY KEY (execution_id, name)
);

-- ipaas schema, migration 3 (SQLite): workflows of several steps, and the step records of executions.

-- JSON list of {"name", "action_type", "config", "condition", "credential_id"}; NULL for a workflow of one
-- plain step `main` (the wave-1 form, every row written before this migration), whose action_type and config
-- columns are the whole definition. Otherwise those two columns hold the first step's (they are NOT NULL).
ALTER TABLE workflows ADD COLUMN steps TEXT;

-- One row per step of an execution that has run (or was copied by a replay that resumes), keyed by name.
-- result: what the API shows (secrets redacted, body cut); output: what templates of later steps see.
CREATE TABLE IF NOT EXISTS execution_steps (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    position     INTEGER NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT,
    finished_at  TEXT,
    result       TEXT,
    error        TEXT,
    output       TEXT,
    PRIMARY KEY (execution_id, name)
);

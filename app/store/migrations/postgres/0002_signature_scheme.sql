-- Migration 2 (PostgreSQL): the signature scheme a workflow's webhooks are checked with (API.md, "Senders as
-- they are"); the same column as sqlite/0002_signature_scheme.sql.
ALTER TABLE workflows ADD COLUMN IF NOT EXISTS signature_scheme text NOT NULL DEFAULT 'auto'
    CHECK (signature_scheme IN ('auto', 'standard', 'github', 'stripe', 'slack', 'shopify'));

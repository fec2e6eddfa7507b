-- Migration 2 (SQLite): the signature scheme a workflow's webhooks are checked with (API.md, "Senders as they are").
ALTER TABLE workflows ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'auto'
    CHECK (signature_scheme IN ('auto', 'standard', 'github', 'stripe', 'slack', 'shopify'));

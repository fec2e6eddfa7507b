-- Migration 5 (PostgreSQL): the same column as sqlite/0005_trace_context.sql. The W3C traceparent of the
-- request that accepted an execution (app/tracing.py), so that every run of it, after a recovery or a
-- redelivery too, continues the same trace. NULL when tracing was off.
ALTER TABLE executions ADD COLUMN IF NOT EXISTS trace_context text;

-- PostgreSQL only, beside it: the oldest-first order of retention's purge batches (and of the sweeper's
-- queued_unowned) as an index, so that a batch of 500 is an index range scan instead of a scan and sort of
-- the whole table (measured on 2 M rows: 254 ms instead of 668 ms a batch, the gap growing with the table).
CREATE INDEX IF NOT EXISTS executions_by_created ON executions (created_at, id);

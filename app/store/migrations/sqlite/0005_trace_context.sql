-- The W3C traceparent of the request that accepted an execution (app/tracing.py), so that every run
-- of it, after a recovery or a redelivery too, continues the same trace. NULL when tracing was off.
ALTER TABLE executions ADD COLUMN trace_context TEXT;

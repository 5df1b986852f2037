-- The W3C traceparent of the request that created each task, so background work on the task
-- (lease expiry, taking it back from a lost agent) links to the trace it began in.
ALTER TABLE tasks ADD COLUMN trace_parent TEXT;

-- An optional bound on one attempt's total run time. A lease renewed by progress or
-- heartbeats never reaches past `started_at + execution_timeout_seconds`, so the lease sweep
-- ends an attempt that overruns it, recording the outcome 'timed_out'.
ALTER TABLE tasks ADD COLUMN execution_timeout_seconds INTEGER;

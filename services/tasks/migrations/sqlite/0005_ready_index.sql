-- Waiting claims are woken per task: the queue looks for tasks that became claimable since its
-- last look by the time they became so.
CREATE INDEX tasks_ready_idx ON tasks (available_at) WHERE status = 'queued';

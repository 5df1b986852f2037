-- Waiting claims are woken per task: the queue looks for tasks that became claimable since its
-- last look by the time they became so, and each notification names its task, so a replica can
-- tell tasks it announced itself from tasks another replica made ready.
CREATE INDEX tasks_ready_idx ON tasks (available_at) WHERE status = 'queued';

CREATE OR REPLACE FUNCTION swarm_task_ready_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('swarm_task_ready', NEW.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

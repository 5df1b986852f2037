-- Delayed tasks wait as 'scheduled' until their time, outside the claim index; the queue turns
-- each due one 'queued' (which notifies waiting claimers) and keeps a timer for the next.
CREATE INDEX tasks_scheduled_idx ON tasks (available_at) WHERE status = 'scheduled';

-- Every attempt, as the task's transitions record it: a claim opens one ('running'), and the
-- statement that ends the attempt names how (`attempt_outcome`), which closes it. Triggers keep
-- the record in the very statement that moves the task, so it can never disagree with it.
ALTER TABLE tasks ADD COLUMN attempt_outcome TEXT;

CREATE TABLE task_attempts (
    task_id     UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    agent_id    UUID,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
);

CREATE FUNCTION swarm_task_attempt_log() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'active' THEN
        INSERT INTO task_attempts (task_id, attempt, agent_id, started_at, outcome)
        SELECT NEW.id, COALESCE(MAX(attempt), 0) + 1, NEW.agent_id, NEW.started_at, 'running'
        FROM task_attempts WHERE task_id = NEW.id;
    ELSIF OLD.status = 'active' THEN
        UPDATE task_attempts
        SET finished_at = NEW.updated_at,
            outcome = COALESCE(NEW.attempt_outcome, 'failed'),
            error = CASE WHEN NEW.attempt_outcome IN ('completed', 'cancelled') THEN NULL ELSE NEW.error END
        WHERE task_id = NEW.id AND outcome = 'running';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_attempt_log
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        AND (NEW.status = 'active' OR OLD.status = 'active'))
    EXECUTE FUNCTION swarm_task_attempt_log();

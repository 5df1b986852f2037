-- Delayed tasks wait as 'scheduled' until their time, outside the claim index; the queue turns
-- each due one 'queued' and keeps a timer for the next.
CREATE INDEX tasks_scheduled_idx ON tasks (available_at) WHERE status = 'scheduled';

-- Every attempt, as the task's transitions record it: a claim opens one ('running'), and the
-- statement that ends the attempt names how (`attempt_outcome`), which closes it. Triggers keep
-- the record in the very statement that moves the task, so it can never disagree with it.
ALTER TABLE tasks ADD COLUMN attempt_outcome TEXT;

CREATE TABLE task_attempts (
    task_id     BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    agent_id    BLOB,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
) STRICT;

CREATE TRIGGER tasks_attempt_started AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'active' AND OLD.status <> 'active'
BEGIN
    INSERT INTO task_attempts (task_id, attempt, agent_id, started_at, outcome)
    SELECT NEW.id, COALESCE(MAX(attempt), 0) + 1, NEW.agent_id, NEW.started_at, 'running'
    FROM task_attempts WHERE task_id = NEW.id;
END;

CREATE TRIGGER tasks_attempt_ended AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'active' AND NEW.status <> 'active'
BEGIN
    UPDATE task_attempts
    SET finished_at = NEW.updated_at,
        outcome = COALESCE(NEW.attempt_outcome, 'failed'),
        error = CASE WHEN NEW.attempt_outcome IN ('completed', 'cancelled') THEN NULL ELSE NEW.error END
    WHERE task_id = NEW.id AND outcome = 'running';
END;

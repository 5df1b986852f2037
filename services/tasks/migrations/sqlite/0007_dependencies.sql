-- Dependencies: a task that depends on others waits as 'waiting' until every one of them is
-- completed. The statement that completes the last of them queues it (or schedules it, when
-- its own start time is still ahead); one that fails or cancels a task cancels every task
-- waiting on it, transitively, naming it. Triggers do both, so they happen in the very
-- transaction that ends the parent, whichever statement ends it.
CREATE TABLE task_dependencies (
    task_id    BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on)
) STRICT;
CREATE INDEX task_dependencies_parent_idx ON task_dependencies (depends_on);

-- How many tasks a task depends on, and how many depend on it, so that claims and reports
-- look dependencies up only for tasks that have them.
ALTER TABLE tasks ADD COLUMN dependency_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN dependent_count INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER tasks_dependents_released AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'completed' AND OLD.status <> 'completed' AND NEW.dependent_count > 0
BEGIN
    UPDATE tasks
    SET status = CASE WHEN available_at > NEW.updated_at THEN 'scheduled' ELSE 'queued' END,
        available_at = max(available_at, NEW.updated_at),
        updated_at = NEW.updated_at
    WHERE status = 'waiting'
      AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id)
      AND NOT EXISTS (
          SELECT 1 FROM task_dependencies d JOIN tasks parent ON parent.id = d.depends_on
          WHERE d.task_id = tasks.id AND parent.status <> 'completed');
END;

-- SQLite runs no trigger from within a trigger here, so the cancellation walks the whole
-- descendant tree at once.
CREATE TRIGGER tasks_dependents_cancelled AFTER UPDATE OF status ON tasks
WHEN NEW.status IN ('failed', 'cancelled') AND OLD.status <> NEW.status
    AND NEW.dependent_count > 0
BEGIN
    UPDATE tasks
    SET status = 'cancelled',
        error = 'dependency ' || lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4)
            || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-'
            || substr(hex(NEW.id), 21)) || ' ended ' || NEW.status,
        finished_at = NEW.updated_at,
        updated_at = NEW.updated_at
    WHERE status = 'waiting' AND id IN (
        WITH RECURSIVE descendants (id) AS (
            SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id
            UNION
            SELECT d.task_id FROM task_dependencies d JOIN descendants ON d.depends_on = descendants.id)
        SELECT id FROM descendants);
END;

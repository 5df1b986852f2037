-- Dependencies: a task that depends on others waits as 'waiting' until every one of them is
-- completed. The statement that completes the last of them queues it (or schedules it, when
-- its own start time is still ahead); one that fails or cancels a task cancels every task
-- waiting on it, transitively, naming it. Triggers do both, so they happen in the very
-- transaction that ends the parent, whichever statement ends it.
CREATE TABLE task_dependencies (
    task_id    UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_parent_idx ON task_dependencies (depends_on);

-- How many tasks a task depends on, and how many depend on it, so that claims and reports
-- look dependencies up only for tasks that have them.
ALTER TABLE tasks ADD COLUMN dependency_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN dependent_count INTEGER NOT NULL DEFAULT 0;

CREATE FUNCTION swarm_task_dependents() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'completed' THEN
        -- Lock the waiting dependents first: a transaction completing another parent of one
        -- of them waits here until this one commits, then its own check sees both parents.
        PERFORM 1 FROM tasks
        WHERE status = 'waiting'
          AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id)
        ORDER BY id FOR UPDATE;
        UPDATE tasks
        SET status = CASE WHEN available_at > NEW.updated_at THEN 'scheduled' ELSE 'queued' END,
            available_at = GREATEST(available_at, NEW.updated_at),
            updated_at = NEW.updated_at
        WHERE status = 'waiting'
          AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id)
          AND NOT EXISTS (
              SELECT 1 FROM task_dependencies d JOIN tasks parent ON parent.id = d.depends_on
              WHERE d.task_id = tasks.id AND parent.status <> 'completed');
    ELSE
        UPDATE tasks
        SET status = 'cancelled',
            error = 'dependency ' || NEW.id || ' ended ' || NEW.status,
            finished_at = NEW.updated_at,
            updated_at = NEW.updated_at
        WHERE status = 'waiting' AND id IN (
            WITH RECURSIVE descendants (id) AS (
                SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id
                UNION
                SELECT d.task_id FROM task_dependencies d JOIN descendants ON d.depends_on = descendants.id)
            SELECT id FROM descendants);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_dependents
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.dependent_count > 0
        AND NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION swarm_task_dependents();

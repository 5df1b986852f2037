-- Task counts by user and status, so a list's total and the queue-depth gauge read a few rows
-- instead of counting up to millions of tasks. Every statement that changes tasks appends what
-- it changed as signed deltas, in its own transaction, so a count read from here is as exact
-- as a COUNT(*) of the same snapshot. Appending (not updating one row per status) keeps
-- concurrent writers from queueing on a counter row; the tasks service folds the deltas into
-- one row per user and status from time to time.
CREATE TABLE task_counts (
    user_id TEXT,
    status  TEXT NOT NULL,
    n       BIGINT NOT NULL
);
CREATE INDEX task_counts_user_status_idx ON task_counts (user_id, status);

-- Appends what one statement changed. Its transition tables: tasks_before (updated or
-- deleted rows as they were), tasks_after (inserted or updated rows as they are).
CREATE FUNCTION swarm_task_counts_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts (user_id, status, n)
        SELECT user_id, status, COUNT(*) FROM tasks_after GROUP BY user_id, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_counts (user_id, status, n)
        SELECT user_id, status, -COUNT(*) FROM tasks_before GROUP BY user_id, status;
    ELSE
        INSERT INTO task_counts (user_id, status, n)
        SELECT user_id, status, SUM(n) FROM (
            SELECT user_id, status, -1 AS n FROM tasks_before
            UNION ALL
            SELECT user_id, status, 1 AS n FROM tasks_after
        ) AS changes
        GROUP BY user_id, status
        HAVING SUM(n) <> 0;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- No task may change between the count below and the triggers taking over.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER tasks_count_inserted
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS tasks_after
    FOR EACH STATEMENT EXECUTE FUNCTION swarm_task_counts_changed();
CREATE TRIGGER tasks_count_updated
    AFTER UPDATE ON tasks REFERENCING OLD TABLE AS tasks_before NEW TABLE AS tasks_after
    FOR EACH STATEMENT EXECUTE FUNCTION swarm_task_counts_changed();
CREATE TRIGGER tasks_count_deleted
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS tasks_before
    FOR EACH STATEMENT EXECUTE FUNCTION swarm_task_counts_changed();

INSERT INTO task_counts (user_id, status, n)
SELECT user_id, status, COUNT(*) FROM tasks GROUP BY user_id, status;

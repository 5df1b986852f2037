-- Created tasks are announced once per statement rather than once per row: one notification
-- names up to 200 of the statement's queued tasks, comma-separated (a payload holds at most
-- 8,000 bytes), so a group of creates costs the database a few notifications instead of a
-- trigger call and a notification per task. Tasks that become queued by an update (a retry, a
-- requeue, a dependency met) are still announced one by one, as before.
DROP TRIGGER tasks_ready_notify ON tasks;

CREATE TRIGGER tasks_ready_notify
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION swarm_task_ready_notify();

CREATE FUNCTION swarm_tasks_created_notify() RETURNS trigger AS $$
DECLARE
    ids TEXT;
BEGIN
    FOR ids IN
        SELECT string_agg(id::text, ',')
        FROM (SELECT id, (row_number() OVER ()) / 200 AS part FROM tasks_after
              WHERE status = 'queued') AS queued
        GROUP BY part
    LOOP
        PERFORM pg_notify('swarm_task_ready', ids);
    END LOOP;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_created_notify
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS tasks_after
    FOR EACH STATEMENT EXECUTE FUNCTION swarm_tasks_created_notify();

-- Wakes long-polling claimers on every replica: a task that becomes claimable (submitted, or
-- requeued after a failure or an expired lease) notifies the `swarm_task_ready` channel.
-- PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION swarm_task_ready_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('swarm_task_ready', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_ready_notify
    AFTER INSERT OR UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION swarm_task_ready_notify();

-- Most tasks carry no idempotency key and, while queued, no agent, yet a plain index holds an
-- entry for every row version of every task, each one a write on the hot path (a task is
-- written three times: created, claimed, finished). Indexing only the rows that have a value
-- serves every lookup (`idempotency_key = $1`, `agent_id = $1` imply a value) and skips four
-- index writes a task.
ALTER TABLE tasks DROP CONSTRAINT tasks_idempotency_key_key;
CREATE UNIQUE INDEX tasks_idempotency_key_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX tasks_agent_idx;
CREATE INDEX tasks_agent_idx ON tasks (agent_id) WHERE agent_id IS NOT NULL;

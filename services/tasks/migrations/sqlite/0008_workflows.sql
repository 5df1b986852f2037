-- Workflows: a graph of tasks submitted together. Its status is not stored: it follows from
-- its tasks' (failed when one failed for good, cancelled when one was cancelled, completed
-- when all completed, running otherwise), so it can never disagree with them.
CREATE TABLE workflows (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    user_id    TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX workflows_created_idx ON workflows (created_at);
CREATE INDEX workflows_user_created_idx ON workflows (user_id, created_at);

ALTER TABLE tasks ADD COLUMN workflow_id BLOB REFERENCES workflows (id) ON DELETE CASCADE;
ALTER TABLE tasks ADD COLUMN workflow_key TEXT;
CREATE INDEX tasks_workflow_idx ON tasks (workflow_id) WHERE workflow_id IS NOT NULL;

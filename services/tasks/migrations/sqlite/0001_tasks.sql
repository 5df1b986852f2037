-- Tasks and their conversations. Times are Unix milliseconds; ids are UUIDs stored as 16-byte
-- blobs; payloads, results and capability lists are JSON text.
CREATE TABLE tasks (
    id                    BLOB PRIMARY KEY NOT NULL,
    title                 TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    payload               TEXT NOT NULL,
    status                TEXT NOT NULL,
    priority              INTEGER NOT NULL,
    required_capabilities TEXT NOT NULL,
    agent_id              BLOB,
    pinned_agent_id       BLOB,
    user_id               TEXT,
    attempts              INTEGER NOT NULL,
    max_attempts          INTEGER NOT NULL,
    timeout_seconds       INTEGER NOT NULL,
    progress_percent      INTEGER NOT NULL,
    progress_message      TEXT,
    result                TEXT,
    error                 TEXT,
    lease_id              BLOB,
    lease_expires_at      INTEGER,
    available_at          INTEGER NOT NULL,
    idempotency_key       TEXT UNIQUE,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    started_at            INTEGER,
    finished_at           INTEGER
) STRICT;

-- Claims walk queued tasks in hand-out order.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, created_at, id) WHERE status = 'queued';
-- The lease sweep finds expired attempts.
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'active';
-- Lists: by status, by agent, by user, and unfiltered newest first.
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at);
CREATE INDEX tasks_agent_idx ON tasks (agent_id);
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at);
CREATE INDEX tasks_created_idx ON tasks (created_at);
-- Retention pruning of finished tasks.
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE task_messages (
    id         BLOB PRIMARY KEY NOT NULL,
    task_id    BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    sender     TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX task_messages_task_idx ON task_messages (task_id, created_at);
CREATE INDEX task_messages_created_idx ON task_messages (created_at);

-- Tasks and their conversations. Times are Unix milliseconds (BIGINT) so that both backends
-- share one row shape; capability lists are jsonb so claims can use containment.
CREATE TABLE tasks (
    id                    UUID PRIMARY KEY,
    title                 TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    payload               TEXT NOT NULL,
    status                TEXT NOT NULL,
    priority              INTEGER NOT NULL,
    required_capabilities JSONB NOT NULL,
    agent_id              UUID,
    pinned_agent_id       UUID,
    user_id               TEXT,
    attempts              INTEGER NOT NULL,
    max_attempts          INTEGER NOT NULL,
    timeout_seconds       INTEGER NOT NULL,
    progress_percent      INTEGER NOT NULL,
    progress_message      TEXT,
    result                TEXT,
    error                 TEXT,
    lease_id              UUID,
    lease_expires_at      BIGINT,
    available_at          BIGINT NOT NULL,
    idempotency_key       TEXT UNIQUE,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    started_at            BIGINT,
    finished_at           BIGINT
);

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
    id         UUID PRIMARY KEY,
    task_id    UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    sender     TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX task_messages_task_idx ON task_messages (task_id, created_at);
CREATE INDEX task_messages_created_idx ON task_messages (created_at);

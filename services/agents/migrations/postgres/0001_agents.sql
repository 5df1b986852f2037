-- Registered agents. Times are Unix milliseconds (BIGINT) so that both backends share one row
-- shape; capabilities are jsonb so filters can use containment.
CREATE TABLE agents (
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL,
    capabilities      JSONB NOT NULL,
    config            TEXT NOT NULL,
    max_concurrency   INTEGER NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Status filters split agents by their last heartbeat; lists page by age.
CREATE INDEX agents_heartbeat_idx ON agents (last_heartbeat_at);
CREATE INDEX agents_created_idx ON agents (created_at);

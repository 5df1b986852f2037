-- Registered agents. Times are Unix milliseconds; ids are UUIDs stored as 16-byte blobs;
-- capabilities and config are JSON text.
CREATE TABLE agents (
    id                BLOB PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL,
    capabilities      TEXT NOT NULL,
    config            TEXT NOT NULL,
    max_concurrency   INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;

-- Status filters split agents by their last heartbeat; lists page by age.
CREATE INDEX agents_heartbeat_idx ON agents (last_heartbeat_at);
CREATE INDEX agents_created_idx ON agents (created_at);

-- API keys of the gateway. Only a SHA-256 of each key is kept; `prefix` is the key's start,
-- shown in lists so people can tell keys apart. Times are Unix milliseconds; ids are UUIDs
-- stored as 16-byte blobs.
CREATE TABLE api_keys (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'client', 'agent')),
    agent_id   BLOB,
    hash       TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX api_keys_created_idx ON api_keys (created_at);

-- API keys of the gateway. Only a SHA-256 of each key is kept; `prefix` is the key's start,
-- shown in lists so people can tell keys apart. Times are Unix milliseconds.
CREATE TABLE api_keys (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'client', 'agent')),
    agent_id   UUID,
    hash       TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_created_idx ON api_keys (created_at);

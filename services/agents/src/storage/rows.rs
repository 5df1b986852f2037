//! How an agent is read out of a row, on both backends.

use crate::domain::Agent;

swarm_kit::from_row!(Agent {
    id,
    name,
    kind,
    capabilities json,
    config,
    max_concurrency,
    last_heartbeat_at,
    created_at,
    updated_at,
});

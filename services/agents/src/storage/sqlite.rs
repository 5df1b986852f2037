//! The SQLite backend of the agent registry: the embedded default.

use sqlx::{Sqlite, SqlitePool};
use swarm_kit::db::SqlitePools;

use super::sql::impl_agent_store;

/// Agents stored in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteAgentStore {
    readers: SqlitePool,
    writer: SqlitePool,
}

impl SqliteAgentStore {
    /// Wraps the pools of a database that has the agents migrations applied.
    pub fn new(pools: SqlitePools) -> Self {
        Self {
            readers: pools.readers,
            writer: pools.writer,
        }
    }
}

impl_agent_store!(
    SqliteAgentStore,
    Sqlite,
    "EXISTS (SELECT 1 FROM json_each(agents.capabilities) WHERE value = "
);

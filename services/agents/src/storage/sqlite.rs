//! The SQLite backend of the agent registry: the embedded default.

use sqlx::{Sqlite, SqlitePool};

use super::sql::impl_agent_store;

/// Agents stored in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteAgentStore {
    pool: SqlitePool,
}

impl SqliteAgentStore {
    /// Wraps a pool whose database has the agents migrations applied.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

impl_agent_store!(
    SqliteAgentStore,
    Sqlite,
    "EXISTS (SELECT 1 FROM json_each(agents.capabilities) WHERE value = "
);

//! The PostgreSQL backend of the agent registry, for replicated deployments.

use sqlx::{PgPool, Postgres};

use super::sql::impl_agent_store;

/// Agents stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresAgentStore {
    /// PostgreSQL serves reads and writes from one pool; both names point at it.
    readers: PgPool,
    writer: PgPool,
}

impl PostgresAgentStore {
    /// Wraps a pool whose database has the agents migrations applied.
    pub fn new(pool: PgPool) -> Self {
        Self {
            readers: pool.clone(),
            writer: pool,
        }
    }
}

impl_agent_store!(PostgresAgentStore, Postgres, "(capabilities ? ");

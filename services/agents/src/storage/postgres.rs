//! The PostgreSQL backend of the agent registry, for replicated deployments.

use sqlx::{PgPool, Postgres};

use super::sql::impl_agent_store;

/// Agents stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresAgentStore {
    pool: PgPool,
}

impl PostgresAgentStore {
    /// Wraps a pool whose database has the agents migrations applied.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl_agent_store!(PostgresAgentStore, Postgres, "(capabilities ? ");

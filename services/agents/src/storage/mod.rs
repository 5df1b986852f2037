//! Agent storage: the [`AgentStore`] trait and its SQLite and PostgreSQL backends, which share
//! every statement but the capability filter (`json_each` on SQLite, `jsonb` containment on
//! PostgreSQL).

mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use swarm_kit::StoreError;
use swarm_kit::db::Pool;
use swarm_kit::page::Page;
use uuid::Uuid;

use crate::domain::{Agent, AgentUpdate, NewAgent};

pub use postgres::PostgresAgentStore;
pub use sqlite::SqliteAgentStore;

/// The tables that grow with the fleet, whose planner statistics are kept fresh on PostgreSQL
/// (see [`swarm_kit::statistics`]).
pub const GROWING_TABLES: &[&str] = &["agents"];

/// Splits agents by their last heartbeat (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatFilter {
    /// Agents whose last heartbeat is before this time.
    Before(i64),
    /// Agents whose last heartbeat is at or after this time.
    Since(i64),
}

/// Durable storage of agents. Each method is one statement. Times are Unix milliseconds.
#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Inserts an agent; a taken name fails with a unique violation.
    async fn insert(&self, agent: &NewAgent, now: i64) -> Result<Agent, StoreError>;

    /// Returns an agent by id.
    async fn get(&self, id: Uuid) -> Result<Option<Agent>, StoreError>;

    /// Returns the agent named `name`.
    async fn by_name(&self, name: &str) -> Result<Option<Agent>, StoreError>;

    /// Returns the agents that exist among `ids`.
    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Agent>, StoreError>;

    /// Returns agents (oldest first) with `capability` and matching `heartbeat`, one page of
    /// them or all when `page` is `None`, and how many match in all.
    async fn list(
        &self,
        capability: Option<&str>,
        heartbeat: Option<HeartbeatFilter>,
        page: Option<Page>,
    ) -> Result<(Vec<Agent>, u64), StoreError>;

    /// Applies the set fields of `update`; `None` when the agent does not exist.
    async fn update(
        &self,
        id: Uuid,
        update: &AgentUpdate,
        now: i64,
    ) -> Result<Option<Agent>, StoreError>;

    /// Deletes an agent; `false` when it did not exist.
    async fn delete(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Records a heartbeat; `None` when the agent does not exist.
    async fn heartbeat(&self, id: Uuid, now: i64) -> Result<Option<Agent>, StoreError>;
}

/// Applies the agents service's migrations to `pool` and returns the store for its backend.
pub async fn open(pool: Pool) -> Result<Arc<dyn AgentStore>, sqlx::migrate::MigrateError> {
    match pool {
        Pool::Sqlite(pools) => {
            let migrator = sqlx::migrate!("./migrations/sqlite");
            swarm_kit::db::migrate(&Pool::Sqlite(pools.clone()), "agents", migrator).await?;
            Ok(Arc::new(SqliteAgentStore::new(pools)))
        }
        Pool::Postgres(pool) => {
            let migrator = sqlx::migrate!("./migrations/postgres");
            swarm_kit::db::migrate(&Pool::Postgres(pool.clone()), "agents", migrator).await?;
            Ok(Arc::new(PostgresAgentStore::new(pool)))
        }
    }
}

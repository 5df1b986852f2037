//! The PostgreSQL backend, for replicated deployments. Claims and lease sweeps lock their
//! candidate rows with `FOR UPDATE SKIP LOCKED` in a sub-select, so concurrent claimers on any
//! number of replicas each take different tasks without waiting on one another; capability
//! matching is `jsonb` containment.

use sqlx::{PgPool, Postgres};

use super::sql::{self, impl_task_store};

/// Tasks stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresTaskStore {
    pool: PgPool,
}

impl PostgresTaskStore {
    /// Wraps a pool whose database has the tasks migrations applied.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The PostgreSQL claim: `$1` now, `$2` agent, `$3` its capabilities (jsonb array), `$4` how many.
pub(crate) const CLAIM: &str = "WITH candidates AS ( \
        SELECT id FROM tasks \
        WHERE status = 'queued' AND available_at <= $1 \
        AND (pinned_agent_id = $2 OR (pinned_agent_id IS NULL AND required_capabilities <@ $3)) \
        ORDER BY priority DESC, created_at, id LIMIT $4 \
        FOR UPDATE SKIP LOCKED) \
    UPDATE tasks SET status = 'active', agent_id = $2, attempts = tasks.attempts + 1, \
        lease_id = gen_random_uuid(), lease_expires_at = $1 + tasks.timeout_seconds * 1000, \
        started_at = $1, updated_at = $1, progress_percent = 0, progress_message = NULL \
    FROM candidates WHERE tasks.id = candidates.id \
    RETURNING tasks.*";

/// Ends expired attempts: `$1` now, `$2` how many at most.
pub(crate) const REQUEUE_EXPIRED: &str = const_format::concatcp!(
    sql::REQUEUE_EXPIRED_SET,
    "WHERE id IN (",
    sql::EXPIRED_IDS,
    " FOR UPDATE SKIP LOCKED) RETURNING *"
);

impl_task_store!(PostgresTaskStore, Postgres, crate::storage::postgres);

//! The SQLite backend: the embedded default. SQLite has one writer at a time, so a claim is a
//! single `UPDATE .. WHERE id IN (SELECT .. LIMIT n) RETURNING *` that no other writer can
//! interleave with; capability matching walks each waiting capability set with `json_each`.

use sqlx::{Sqlite, SqlitePool};
use swarm_kit::db::SqlitePools;

use super::sql::{self, impl_task_store};
use crate::domain::{Claim, Completion, Task};

/// Tasks stored in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteTaskStore {
    readers: SqlitePool,
    writer: SqlitePool,
}

impl SqliteTaskStore {
    /// Wraps the pools of a database that has the tasks migrations applied.
    pub fn new(pools: SqlitePools) -> Self {
        Self {
            readers: pools.readers,
            writer: pools.writer,
        }
    }

    /// Runs the claim statement; SQLite's single writer makes it atomic on its own.
    async fn claim_rows(&self, claim: &Claim, now: i64) -> Result<Vec<Task>, sqlx::Error> {
        sqlx::query_as(CLAIM)
            .bind(now)
            .bind(claim.agent_id)
            .bind(sqlx::types::Json(&claim.capabilities))
            .bind(i64::from(claim.max_tasks))
            .bind(i64::from(claim.max_concurrency))
            .fetch_all(&self.writer)
            .await
    }
}

/// The SQLite claim: `$1` now, `$2` agent, `$3` its capabilities (JSON array), `$4` how many,
/// `$5` the agent's concurrency. Each capability set the agent has (a correlated sub-select
/// standing in for a lateral join), and its pinned tasks, offer their best `$4`; the best of
/// those are taken.
const CLAIM: &str = const_format::concatcp!(
    "UPDATE tasks SET status = 'active', agent_id = $2, \
    attempts = attempts + 1, lease_id = randomblob(16), lease_expires_at = ",
    sql::lease_until!("$1", "$1"),
    ", started_at = $1, updated_at = $1, progress_percent = 0, progress_message = NULL \
    WHERE id IN (SELECT id FROM (",
    // Without statistics (nothing runs ANALYZE) SQLite would rather walk the status index.
    sql::capability_sets!("tasks INDEXED BY tasks_claim_set_idx"),
    "SELECT offered.id, offered.priority, offered.created_at \
        FROM capability_sets, tasks AS offered \
        WHERE capability_sets.capabilities IS NOT NULL AND NOT EXISTS ( \
            SELECT 1 FROM json_each(capability_sets.capabilities) AS required \
            WHERE required.value NOT IN (SELECT value FROM json_each($3))) \
        AND offered.id IN (SELECT id ",
    sql::CLAIMABLE_OF_SET,
    ") UNION ALL SELECT * FROM (SELECT id, priority, created_at ",
    sql::CLAIMABLE_PINNED,
    ") ORDER BY priority DESC, created_at, id \
        LIMIT max(0, min($4, $5 - ",
    sql::HELD_BY_AGENT,
    ")))) \
    RETURNING *"
);

/// Ends expired attempts: `$1` now, `$2` how many at most.
pub(crate) const REQUEUE_EXPIRED: &str = const_format::concatcp!(
    sql::REQUEUE_EXPIRED_SET,
    "WHERE id IN (",
    sql::EXPIRED_IDS,
    ") RETURNING *"
);

/// Queues due scheduled tasks: `$1` now, `$2` how many at most.
pub(crate) const QUEUE_DUE: &str =
    const_format::concatcp!(sql::QUEUE_DUE, sql::DUE_IDS, ") RETURNING *");

/// Inserts `rows` with one multi-row statement; a row whose idempotency key or schedule tick
/// exists already is left out. Returns the rows inserted.
pub(crate) async fn insert_rows(
    connection: &mut sqlx::SqliteConnection,
    rows: &[sql::NewRow],
    now: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    let mut insert = sqlx::QueryBuilder::<Sqlite>::new(sql::INSERT_TASKS);
    insert.push_values(rows, |mut values, row| {
        values
            .push_bind(row.id)
            .push_bind(row.title.clone())
            .push_bind(row.kind.clone())
            .push_bind(row.payload.clone())
            .push_bind(row.status)
            .push_bind(row.priority)
            .push_bind(row.capabilities.clone())
            .push_bind(row.pinned_agent_id)
            .push_bind(row.pinned_agent_id)
            .push_bind(row.user_id.clone())
            .push_bind(0_i32)
            .push_bind(row.max_attempts)
            .push_bind(row.timeout_seconds)
            .push_bind(0_i32)
            .push_bind(row.available_at)
            .push_bind(now)
            .push_bind(now)
            .push_bind(row.trace_parent.clone())
            .push_bind(row.idempotency_key.clone())
            .push_bind(row.request_hash.clone())
            .push_bind(row.dependency_count)
            .push_bind(row.workflow_id)
            .push_bind(row.workflow_key.clone())
            .push_bind(row.schedule_id)
            .push_bind(row.schedule_tick)
            .push_bind(row.execution_timeout_seconds);
    });
    insert.push(sql::INSERT_TASKS_END);
    insert.build_query_as().fetch_all(connection).await
}

/// Does nothing: SQLite runs one write at a time, so writes never wait for each other's row
/// locks, and there is no order to keep (PostgreSQL's takes the agent's tasks in id order).
pub(crate) async fn lock_held_in_id_order(
    _: &mut sqlx::SqliteConnection,
    _: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    Ok(())
}

/// Completes the attempts `completions` name with one statement over a `VALUES` list.
pub(crate) async fn complete_rows(
    pool: &SqlitePool,
    completions: &[Completion],
    now: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    let mut complete = sqlx::QueryBuilder::<Sqlite>::new(sql::COMPLETE);
    complete
        .push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(" FROM (");
    complete.push_values(completions, |mut values, completion| {
        values
            .push_bind(completion.id)
            .push_bind(completion.lease.agent_id)
            .push_bind(completion.lease.lease_id)
            .push_bind(completion.result.as_str());
    });
    complete.push(") AS done").push(sql::COMPLETE_END);
    complete.build_query_as().fetch_all(pool).await
}

/// Locks the parents a new task depends on until it is recorded: nothing to add, as SQLite's
/// single writer runs the whole insertion alone.
pub(crate) const LOCK_PARENTS: &str = "";

/// Matches a pattern whatever the case of its letters (SQLite's `LIKE` ignores the case of
/// ASCII letters).
pub(crate) const LIKE_ANY_CASE: &str = "LIKE ";

/// Folds count deltas: nothing to fold, as SQLite's triggers keep one row per user and status.
pub(crate) const FOLD_COUNTS: Option<&str> = None;

impl_task_store!(SqliteTaskStore, Sqlite, crate::storage::sqlite);

/// Takes this replica's place among the tasks services writing the SQLite database of `pools`,
/// as [`super::join_writers`] does on PostgreSQL, with a lock file beside the database
/// (`<database>-tasks.lock`): exclusive for a sole writer (`sole` given, whose term of sole
/// writing then begins), shared for any other. Either waits up to
/// [`super::current::JOIN_WAIT`] for the other to go. The operating system holds the lock as
/// long as the returned file is open, and drops it with the process. An in-memory database
/// has no file to lock and no other writer: it is joined without one.
pub async fn join_sqlite_writers(
    pools: &SqlitePools,
    sole: Option<&super::current::SoleWriter>,
) -> Result<Option<std::fs::File>, super::current::JoinError> {
    use super::current::{JOIN_WAIT, JoinError};
    let options = pools.writer.connect_options();
    let database = options.get_filename();
    if database.as_os_str().is_empty() || database.to_string_lossy().contains(":memory:") {
        if let Some(sole) = sole {
            sole.begin_held();
        }
        return Ok(None);
    }
    let mut path = database.as_os_str().to_owned();
    path.push("-tasks.lock");
    let path = std::path::PathBuf::from(path);
    let failed = |source: std::io::Error| JoinError::LockFile {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    let give_up = std::time::Instant::now() + JOIN_WAIT;
    loop {
        let locked = match sole {
            Some(_) => file.try_lock(),
            None => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(match sole {
                    Some(_) => JoinError::NotAlone,
                    None => JoinError::SoleWriterRuns,
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(failed(error)),
        }
    }
    if let Some(sole) = sole {
        sole.begin_held();
    }
    Ok(Some(file))
}

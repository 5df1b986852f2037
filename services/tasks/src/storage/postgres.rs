//! The PostgreSQL backend, for replicated deployments. Claims and lease sweeps lock their
//! candidate rows with `FOR UPDATE SKIP LOCKED` in a sub-select, so concurrent claimers on any
//! number of replicas each take different tasks without waiting on one another; capability
//! matching is `jsonb` containment of each waiting capability set.

use sqlx::{PgPool, Postgres};

use uuid::Uuid;

use super::sql::{self, impl_task_store};
use crate::domain::{Claim, Completion, Task};

/// Tasks stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresTaskStore {
    /// PostgreSQL serves reads and writes from one pool; both names point at it.
    readers: PgPool,
    writer: PgPool,
}

impl PostgresTaskStore {
    /// Wraps a pool whose database has the tasks migrations applied.
    pub fn new(pool: PgPool) -> Self {
        Self {
            readers: pool.clone(),
            writer: pool,
        }
    }

    /// Runs the claim statement under a per-agent advisory lock, so that two claims of one
    /// agent (on any replicas) cannot both count its free slots before either takes them, and
    /// with its plan settled (see [`begin_claim`]).
    async fn claim_rows(&self, claim: &Claim, now: i64) -> Result<Vec<Task>, sqlx::Error> {
        let mut transaction = begin_claim(&self.writer, agent_lock_key(claim.agent_id)).await?;
        let tasks = sqlx::query_as(CLAIM)
            .bind(now)
            .bind(claim.agent_id)
            .bind(sqlx::types::Json(&claim.capabilities))
            .bind(i64::from(claim.max_tasks))
            .bind(i64::from(claim.max_concurrency))
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(tasks)
    }
}

/// The channel on which the database announces claimable tasks (see migration 0002).
const TASK_READY_CHANNEL: &str = "swarm_task_ready";

/// Listens for claimable-task notifications from every replica and calls `wake` with each
/// task's id, until `stop` is cancelled; a lost connection is re-established.
pub async fn relay_task_ready(
    pool: PgPool,
    wake: impl Fn(Uuid) + Send,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for task notifications; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(error) = listener.listen(TASK_READY_CHANNEL).await {
            tracing::warn!(%error, "cannot subscribe to task notifications; retrying");
            continue;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                notification = listener.recv() => match notification {
                    // A notification names one task, or the tasks one statement created,
                    // comma-separated (see migration 0015).
                    Ok(notification) => for id in notification.payload().split(',') {
                        match id.parse() {
                            Ok(id) => wake(id),
                            Err(_) => tracing::debug!(payload = notification.payload(), "task notification names no task"),
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "task notifications interrupted");
                        break;
                    }
                },
            }
        }
    }
}

/// The advisory-lock key of an agent: the random tail of its UUID.
fn agent_lock_key(agent_id: Uuid) -> i64 {
    let bytes = agent_id.as_bytes();
    i64::from_be_bytes(bytes[8..].try_into().expect("a uuid has 16 bytes"))
}

/// Begins a claim's transaction, in one round trip: takes the claiming agent's advisory lock
/// (`key`) and settles the claim's plan for the rest of the transaction, whatever the table's
/// statistics say. A queue grows from empty to thousands of tasks faster than autovacuum
/// refreshes them, and with statistics that still count a handful of queued tasks the planner
/// reads every queued task off the ready index and sorts them all for each claim (12,000 queued
/// tasks: 0.5 to 43 ms a claim, growing with the queue). With sorts ruled out only the claim
/// indexes' ordered probes are left, and JIT stays off: the cost that ruling adds to every plan
/// would otherwise get the statement compiled (0.4 s). The key is a number formatted here, so
/// the statement can be sent as it is.
async fn begin_claim(
    pool: &PgPool,
    key: i64,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT pg_advisory_xact_lock({key}); \
        SET LOCAL enable_sort = off; SET LOCAL jit = off"
    )))
    .await
}

/// The PostgreSQL claim: `$1` now, `$2` agent, `$3` its capabilities (jsonb array), `$4` how
/// many, `$5` the agent's concurrency. Each capability set the agent has, and its pinned tasks,
/// offer their best `$4` (locked, skipping rows other claims hold); the best of those are taken.
const CLAIM: &str = const_format::concatcp!(
    sql::capability_sets!("tasks"),
    ", candidates AS ( \
        SELECT id FROM ( \
            SELECT offered.* FROM capability_sets CROSS JOIN LATERAL ( \
                SELECT id, priority, created_at ",
    sql::CLAIMABLE_OF_SET,
    " FOR UPDATE SKIP LOCKED) AS offered \
            WHERE capability_sets.capabilities <@ $3 \
            UNION ALL \
            SELECT * FROM (SELECT id, priority, created_at ",
    sql::CLAIMABLE_PINNED,
    " FOR UPDATE SKIP LOCKED) AS pinned \
        ) AS offers \
        ORDER BY priority DESC, created_at, id \
        LIMIT GREATEST(0, LEAST($4, $5 - ",
    sql::HELD_BY_AGENT,
    "))) \
    UPDATE tasks SET status = 'active', agent_id = $2, attempts = tasks.attempts + 1, \
        lease_id = gen_random_uuid(), lease_expires_at = ",
    sql::lease_until!("$1", "$1"),
    ", started_at = $1, updated_at = $1, progress_percent = 0, progress_message = NULL \
    FROM candidates WHERE tasks.id = candidates.id \
    RETURNING tasks.*"
);

/// Ends expired attempts: `$1` now, `$2` how many at most.
pub(crate) const REQUEUE_EXPIRED: &str = const_format::concatcp!(
    sql::REQUEUE_EXPIRED_SET,
    "WHERE id IN (",
    sql::EXPIRED_IDS,
    " FOR UPDATE SKIP LOCKED) RETURNING *"
);

/// Queues due scheduled tasks: `$1` now, `$2` how many at most.
pub(crate) const QUEUE_DUE: &str = const_format::concatcp!(
    sql::QUEUE_DUE,
    sql::DUE_IDS,
    " FOR UPDATE SKIP LOCKED) RETURNING *"
);

/// Inserts `rows` with one statement that binds a column of values each (`UNNEST`), so a
/// thousand rows cost a few dozen parameters rather than tens of thousands; a row whose
/// idempotency key or schedule tick exists already is left out. Returns the rows inserted.
pub(crate) async fn insert_rows(
    connection: &mut sqlx::PgConnection,
    rows: &[sql::NewRow],
    now: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    fn column<T>(rows: &[sql::NewRow], value: impl Fn(&sql::NewRow) -> T) -> Vec<T> {
        rows.iter().map(value).collect()
    }
    sqlx::query_as(INSERT_UNNEST)
        .bind(column(rows, |row| row.id))
        .bind(column(rows, |row| row.title.clone()))
        .bind(column(rows, |row| row.kind.clone()))
        .bind(column(rows, |row| row.payload.clone()))
        .bind(column(rows, |row| row.status))
        .bind(column(rows, |row| row.priority))
        .bind(column(rows, |row| row.capabilities.clone()))
        .bind(column(rows, |row| row.pinned_agent_id))
        .bind(column(rows, |row| row.user_id.clone()))
        .bind(column(rows, |row| row.max_attempts))
        .bind(column(rows, |row| row.timeout_seconds))
        .bind(column(rows, |row| row.available_at))
        .bind(column(rows, |row| row.trace_parent.clone()))
        .bind(column(rows, |row| row.idempotency_key.clone()))
        .bind(column(rows, |row| row.request_hash.clone()))
        .bind(column(rows, |row| row.dependency_count))
        .bind(column(rows, |row| row.workflow_id))
        .bind(column(rows, |row| row.workflow_key.clone()))
        .bind(column(rows, |row| row.schedule_id))
        .bind(column(rows, |row| row.schedule_tick))
        .bind(column(rows, |row| row.execution_timeout_seconds))
        .bind(now)
        .fetch_all(connection)
        .await
}

/// [`sql::INSERT_TASKS`] over columns of values: `$1..$21` the columns, `$22` now.
const INSERT_UNNEST: &str = const_format::concatcp!(
    sql::INSERT_TASKS,
    "SELECT id, title, kind, payload, status, priority, capabilities::jsonb, pinned, pinned, \
    user_id, 0, max_attempts, timeout_seconds, 0, available_at, $22, $22, trace_parent, \
    idempotency_key, request_hash, dependency_count, workflow_id, workflow_key, schedule_id, \
    schedule_tick, execution_timeout_seconds \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], \
    $7::text[], $8::uuid[], $9::text[], $10::int4[], $11::int4[], $12::int8[], $13::text[], \
    $14::text[], $15::text[], $16::int4[], $17::uuid[], $18::text[], $19::uuid[], $20::int8[], \
    $21::int4[]) \
    AS new_row (id, title, kind, payload, status, priority, capabilities, pinned, user_id, \
    max_attempts, timeout_seconds, available_at, trace_parent, idempotency_key, request_hash, \
    dependency_count, workflow_id, workflow_key, schedule_id, schedule_tick, \
    execution_timeout_seconds)",
    sql::INSERT_TASKS_END
);

/// Completes the attempts `completions` name with one statement that binds a column of values
/// each (`UNNEST`), so every batch runs the same prepared statement, and runs it on its generic
/// plan: the plan is the same for any batch (the reports' tasks by primary key), and planning
/// it afresh for each batch, as PostgreSQL otherwise chooses to, cost more than running it.
pub(crate) async fn complete_rows(
    pool: &PgPool,
    completions: &[Completion],
    now: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    fn column<'a, T>(completions: &'a [Completion], value: impl Fn(&'a Completion) -> T) -> Vec<T> {
        completions.iter().map(value).collect()
    }
    let mut transaction = pool
        .begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;
    let completed = sqlx::query_as(COMPLETE_UNNEST)
        .bind(now)
        .bind(column(completions, |completion| completion.id))
        .bind(column(completions, |completion| completion.lease.agent_id))
        .bind(column(completions, |completion| completion.lease.lease_id))
        .bind(column(completions, |completion| completion.result.as_str()))
        .fetch_all(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(completed)
}

/// [`sql::COMPLETE`] over columns of values: `$1` now, `$2..$5` the reports. The reports'
/// tasks are locked in id order first, as every statement that writes several tasks locks
/// them (see [`lock_held_in_id_order`]): a batch of reports and a heartbeat renewing some of
/// the same tasks then wait for each other, and never deadlock.
const COMPLETE_UNNEST: &str = const_format::concatcp!(
    "WITH locked AS (SELECT id FROM tasks WHERE id = ANY($2::uuid[])",
    IN_ID_ORDER,
    ") ",
    sql::COMPLETE,
    "$1, updated_at = $1 FROM (SELECT * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], \
    $5::text[]) AS report (column1, column2, column3, column4) \
    WHERE column1 IN (SELECT id FROM locked)) AS done",
    sql::COMPLETE_END
);

/// How every statement that writes several tasks an agent may hold locks them first.
const IN_ID_ORDER: &str = " ORDER BY id FOR UPDATE";

/// Locks the tasks `agent_id` holds in id order, in `transaction`, before the statements that
/// square them with what the agent lists renew and end some of them.
pub(crate) async fn lock_held_in_id_order(
    transaction: &mut sqlx::PgConnection,
    agent_id: Uuid,
) -> Result<(), sqlx::Error> {
    const LOCK_HELD: &str = const_format::concatcp!(
        "SELECT id FROM tasks WHERE status = 'active' AND agent_id = $1",
        IN_ID_ORDER
    );
    sqlx::query(LOCK_HELD)
        .bind(agent_id)
        .execute(transaction)
        .await
        .map(drop)
}

/// Locks the parents a new task depends on (or a retried task waits on) until it is recorded,
/// so none ends before the dependency is there for its trigger to see. The lock is strong
/// enough for the dependent count that follows, and taken in id order, so two insertions
/// sharing parents wait for each other rather than deadlock.
pub(crate) const LOCK_PARENTS: &str = " ORDER BY id FOR NO KEY UPDATE";

/// Matches a pattern whatever the case of its letters.
pub(crate) const LIKE_ANY_CASE: &str = "ILIKE ";

/// Folds the count deltas that statements appended into one row per user and status,
/// touching only the users and statuses with more than one row. Deltas appended meanwhile are not in the statement's snapshot, so
/// they stay for the next fold; replicas folding at once each fold what they saw.
pub(crate) const FOLD_COUNTS: Option<&str> = Some(
    "WITH split AS (SELECT user_id, status FROM task_counts \
     GROUP BY user_id, status HAVING COUNT(*) > 1), \
     folded AS (DELETE FROM task_counts AS c USING split AS s \
     WHERE c.user_id IS NOT DISTINCT FROM s.user_id AND c.status = s.status \
     RETURNING c.user_id, c.status, c.n) \
     INSERT INTO task_counts (user_id, status, n) \
     SELECT user_id, status, SUM(n) FROM folded GROUP BY user_id, status HAVING SUM(n) <> 0",
);

impl_task_store!(PostgresTaskStore, Postgres, crate::storage::postgres);

/// The advisory lock a sole-writer tasks service holds exclusively, and every other tasks
/// service shared, on one database.
const WRITERS_LOCK: i64 = 0x7377_6172_6d74_736b;
/// How long one confirmation that the sole writer holds its lock lasts.
const SOLE_LEASE: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the writers' lock is confirmed.
const LOCK_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Takes this replica's place among the tasks services writing `pool`. A sole writer (`sole`
/// given) takes the writers' lock exclusively, and is refused while another tasks service runs
/// on the database; any other takes it shared, and is refused while a sole writer runs. Either
/// waits up to [`JOIN_WAIT`] for the other to go. Returns the connection that holds the lock.
pub async fn join_writers(
    pool: &PgPool,
    sole: Option<&crate::storage::current::SoleWriter>,
) -> Result<sqlx::PgConnection, crate::storage::current::JoinError> {
    use crate::storage::current::{JOIN_WAIT, JoinError};
    let mut lock = pool.acquire().await?.detach();
    if let Some(sole) = sole {
        // A predecessor killed a moment ago may hold the lock until the database notices.
        let give_up = std::time::Instant::now() + JOIN_WAIT;
        loop {
            let asked = std::time::Instant::now();
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(WRITERS_LOCK)
                .fetch_one(&mut lock)
                .await?;
            if taken {
                sole.begin(asked + SOLE_LEASE);
                return Ok(lock);
            }
            if asked > give_up {
                return Err(JoinError::NotAlone);
            }
            tokio::time::sleep(LOCK_CHECK).await;
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = '{}ms'",
        JOIN_WAIT.as_millis()
    )))
    .execute(&mut lock)
    .await?;
    match sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(WRITERS_LOCK)
        .execute(&mut lock)
        .await
    {
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => {
            Err(JoinError::SoleWriterRuns)
        }
        outcome => {
            outcome?;
            sqlx::query("SET lock_timeout = 0")
                .execute(&mut lock)
                .await?;
            Ok(lock)
        }
    }
}

/// Keeps the writers' lock that `lock` holds until `stop`. A sole writer confirms it every
/// [`LOCK_CHECK`] (each confirmation lasting [`SOLE_LEASE`]) and, should the connection fail,
/// stops serving reads from memory for good, since another service may write from then on;
/// any other service only holds it (nothing it does rests on knowing the lock is still held).
pub async fn keep_writer_lock(
    mut lock: sqlx::PgConnection,
    sole: Option<std::sync::Arc<crate::storage::current::SoleWriter>>,
    stop: tokio_util::sync::CancellationToken,
) {
    if let Some(sole) = sole {
        confirm_until_stopped(&mut lock, &sole, &stop).await;
        sole.end();
    } else {
        stop.cancelled().await;
    }
    let _ = sqlx::Connection::close(lock).await;
}

/// Confirms `sole`'s term over `lock` every [`LOCK_CHECK`] until `stop`, or until the
/// connection fails.
async fn confirm_until_stopped(
    lock: &mut sqlx::PgConnection,
    sole: &crate::storage::current::SoleWriter,
    stop: &tokio_util::sync::CancellationToken,
) {
    let mut check = tokio::time::interval(LOCK_CHECK);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = check.tick() => {}
        }
        let asked = std::time::Instant::now();
        if let Err(error) = sqlx::query("SELECT 1").execute(&mut *lock).await {
            tracing::warn!(%error, "lost the writers' lock; task reads go to the database from now on");
            return;
        }
        sole.confirm(asked + SOLE_LEASE);
    }
}

#[cfg(test)]
mod tests {
    use swarm_kit::db::Pool;
    use swarm_kit::testing::{Backend, TestDatabase};

    use super::*;
    use crate::domain::NewTask;
    use crate::storage::{Insertion, TaskStore};

    /// A fresh PostgreSQL test database with the tasks tables, its pool and a store over it
    /// (the database is dropped with the first of the three).
    async fn migrated() -> (TestDatabase, PgPool, PostgresTaskStore) {
        let database = TestDatabase::new(Backend::Postgres).await;
        crate::storage::open(database.pool()).await.unwrap();
        let Pool::Postgres(pool) = database.pool() else {
            unreachable!("a PostgreSQL test database")
        };
        let store = PostgresTaskStore::new(pool.clone());
        (database, pool, store)
    }

    async fn insert(store: &PostgresTaskStore, count: usize, capability: &str) {
        let task = NewTask {
            title: "t".into(),
            required_capabilities: vec![capability.into()],
            ..NewTask::default()
        };
        for _ in 0..count / 500 {
            store
                .insert_many(&vec![task.clone(); 500], 1)
                .await
                .unwrap();
        }
    }

    /// A queue that filled after the statistics were taken (they count no queued task) is
    /// claimed through the claim index, never by reading and sorting every queued task.
    #[tokio::test]
    async fn claims_probe_the_claim_index_whatever_the_statistics_say() {
        let (_database, pool, store) = migrated().await;
        insert(&store, 2000, "done").await;
        sqlx::query("UPDATE tasks SET status = 'completed'")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
        insert(&store, 10_000, "gpu").await;

        let mut transaction = begin_claim(&pool, 0).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM}")))
            .bind(10_000_i64)
            .bind(Uuid::now_v7())
            .bind(sqlx::types::Json(["gpu"]))
            .bind(4_i64)
            .bind(8_i64)
            .fetch_all(&mut *transaction)
            .await
            .unwrap();
        transaction.rollback().await.unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("tasks_claim_set_idx"), "{plan}");
        assert!(!plan.contains("tasks_ready_idx"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    /// Waits until `count` statements of the database wait for a lock another holds.
    async fn lock_waiters(pool: &PgPool, count: i64) {
        let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
            WHERE datname = current_database() AND wait_event_type = 'Lock'";
        for _ in 0..500 {
            let now: i64 = sqlx::query_scalar(waiting).fetch_one(pool).await.unwrap();
            if now >= count {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} statements came to wait for a lock");
    }

    /// Two batches of reports naming the same tasks in opposite orders, held up together by a
    /// third transaction, both go through once it ends: statements that write several tasks
    /// lock them in id order, so they queue for each other and never deadlock.
    #[tokio::test]
    async fn reports_naming_the_same_tasks_in_any_order_never_deadlock() {
        let (_database, pool, store) = migrated().await;
        insert(&store, 500, "x").await;
        let agent_id = Uuid::now_v7();
        let claim = Claim {
            agent_id,
            capabilities: vec!["x".into()],
            max_concurrency: 60,
            max_tasks: 60,
            wait: std::time::Duration::ZERO,
        };
        let mut held = store.claim_rows(&claim, 2).await.unwrap();
        sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
        held.sort_by_key(|task| task.id);
        held.truncate(6);
        let reports: Vec<Completion> = held
            .iter()
            .map(|task| Completion {
                id: task.id,
                lease: crate::domain::LeaseRef {
                    agent_id,
                    lease_id: task.lease_id,
                },
                result: "1".into(),
            })
            .collect();
        let reversed: Vec<Completion> = reports.iter().rev().cloned().collect();
        // The plan of an agent that holds many tasks, on a busy queue's statistics: the reports
        // one by one, in the order they come, each looking up its task.
        let report_by_report = (*pool.connect_options())
            .clone()
            .options([("enable_mergejoin", "off"), ("enable_hashjoin", "off")]);
        let pool = PgPool::connect_with(report_by_report).await.unwrap();

        let mut blocker = pool.begin().await.unwrap();
        sqlx::query("SELECT id FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(held[0].id)
            .execute(&mut *blocker)
            .await
            .unwrap();
        let ascending = tokio::spawn({
            let pool = pool.clone();
            async move { complete_rows(&pool, &reports, 3).await }
        });
        lock_waiters(&pool, 1).await;
        let descending = tokio::spawn({
            let pool = pool.clone();
            async move { complete_rows(&pool, &reversed, 3).await }
        });
        lock_waiters(&pool, 2).await;
        blocker.commit().await.unwrap();

        let first = ascending.await.unwrap().expect("no deadlock");
        let second = descending.await.unwrap().expect("no deadlock");
        assert_eq!(
            first.len() + second.len(),
            held.len(),
            "each completes once"
        );
    }

    /// A transaction the database gives up to break a deadlock is reported as unavailable, so
    /// callers try again (it kept nothing), rather than as a failure to give up on.
    #[tokio::test]
    async fn a_transaction_given_up_for_a_deadlock_is_unavailable_not_failed() {
        let (_database, pool, store) = migrated().await;
        insert(&store, 500, "x").await;
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tasks ORDER BY id LIMIT 2")
            .fetch_all(&pool)
            .await
            .unwrap();
        let lock = "SELECT id FROM tasks WHERE id = $1 FOR UPDATE";
        let (mut first, mut second) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
        sqlx::query(lock)
            .bind(ids[0])
            .execute(&mut *first)
            .await
            .unwrap();
        sqlx::query(lock)
            .bind(ids[1])
            .execute(&mut *second)
            .await
            .unwrap();
        let (first_id, second_id) = (ids[0], ids[1]);
        let crossed = tokio::spawn(async move {
            let locked = sqlx::query(lock).bind(second_id).execute(&mut *first).await;
            (locked, first)
        });
        lock_waiters(&pool, 1).await;
        let locked = sqlx::query(lock).bind(first_id).execute(&mut *second).await;
        // Ending this transaction lets the other through, whichever of the two was given up.
        second.rollback().await.unwrap();
        let (other, first) = crossed.await.unwrap();
        // Ended here, not by its drop: a dropped transaction's rollback waits for the pool's
        // next turn on this runtime, which the schema's removal at the test's end (blocking
        // this thread on the rows still locked) would never give it.
        first.rollback().await.unwrap();
        let given_up = locked
            .err()
            .or(other.err())
            .expect("one of them is given up");
        let given_up = swarm_kit::StoreError::from(given_up);
        assert!(
            matches!(given_up, swarm_kit::StoreError::Contention(_)),
            "{given_up:?}"
        );
        let error = swarm_kit::Error::from(given_up);
        assert_eq!(error.code, swarm_kit::ErrorCode::Unavailable, "{error:?}");
    }

    /// Waits for the ids `relay` hears until every one of `expected` came, and returns what it
    /// heard meanwhile; fails after a few seconds.
    async fn hear_all(
        heard: &mut tokio::sync::mpsc::UnboundedReceiver<Uuid>,
        expected: &std::collections::HashSet<Uuid>,
    ) -> std::collections::HashSet<Uuid> {
        let mut got = std::collections::HashSet::new();
        while !expected.is_subset(&got) {
            let id = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
                .await
                .unwrap_or_else(|_| panic!("heard {} of {} tasks", got.len(), expected.len()))
                .expect("the relay runs");
            got.insert(id);
        }
        got
    }

    /// Every task a statement creates queued is announced to the replicas' relays, however
    /// many the statement creates (one notification holds up to 200); a scheduled task is
    /// announced when it becomes queued, not before.
    #[tokio::test]
    async fn created_tasks_are_announced_to_every_replica() {
        let (_database, pool, store) = migrated().await;
        let (woken, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let relay = tokio::spawn(relay_task_ready(
            pool.clone(),
            move |id| {
                let _ = woken.send(id);
            },
            stop.clone(),
        ));
        let created = |insertion| match insertion {
            Insertion::Created(tasks) => tasks,
            _ => unreachable!("tasks that stand alone are created"),
        };
        // The relay listens once its connection is up: create until it hears. Tests beside
        // this one share the database, and so the channel: their tasks may be heard too.
        'listening: loop {
            let probe = created(store.insert(&NewTask::default(), None, 1).await.unwrap())[0].id;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
            while let Ok(id) = tokio::time::timeout_at(deadline, heard.recv()).await {
                if id == Some(probe) {
                    break 'listening;
                }
            }
        }
        let scheduled = NewTask {
            delay_seconds: Some(60),
            ..NewTask::default()
        };
        let mut tasks = vec![NewTask::default(); 450];
        tasks.push(scheduled);
        let tasks = created(store.insert_many(&tasks, 1).await.unwrap());
        let queued: std::collections::HashSet<Uuid> =
            tasks[..450].iter().map(|task| task.id).collect();
        let later = tasks[450].id;
        let got = hear_all(&mut heard, &queued).await;
        assert!(!got.contains(&later), "a scheduled task is announced early");

        let due = store.queue_due(1 + 61_000, 10).await.unwrap();
        assert_eq!(due.iter().map(|task| task.id).collect::<Vec<_>>(), [later]);
        hear_all(&mut heard, &std::collections::HashSet::from([later])).await;
        stop.cancel();
        relay.await.unwrap();
    }
}

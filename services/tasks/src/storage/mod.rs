//! Task storage: the [`TaskStore`] trait and its two backends, SQLite and PostgreSQL, which share
//! every statement that both dialects accept and differ only where they must (claims and lease
//! sweeps lock rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL; capability matching uses `jsonb`
//! containment there and `json_each` on SQLite).

pub mod current;
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

use crate::domain::{
    Attempt, Claim, Completion, LeaseRef, Message, MessageScope, NewMessage, NewTask, ReadyWork,
    Schedule, Task, TaskFilter, TaskStatus, Workflow, WorkflowFilter, WorkflowGraph,
};

pub use current::JoinError;
pub use postgres::{PostgresTaskStore, join_writers, keep_writer_lock, relay_task_ready};
pub use sqlite::{SqliteTaskStore, join_sqlite_writers};

/// The tables that grow with every task, whose planner statistics are kept fresh on PostgreSQL
/// (see [`swarm_kit::statistics`]).
pub const GROWING_TABLES: &[&str] = &["tasks", "task_attempts"];

/// What tells one state of a task from the next, read without the rest of the task: when it
/// last changed, and (for changes within one millisecond) its status and progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskVersion {
    /// The task.
    pub id: Uuid,
    /// When it last changed.
    pub updated_at: i64,
    /// Its status.
    pub status: TaskStatus,
    /// Its progress.
    pub progress_percent: i32,
}

impl TaskVersion {
    /// The version of `task`.
    pub fn of(task: &Task) -> Self {
        Self {
            id: task.id,
            updated_at: task.updated_at,
            status: task.status,
            progress_percent: task.progress_percent,
        }
    }
}

/// What inserting tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insertion {
    /// The tasks were created; here in the order given.
    Created(Vec<Task>),
    /// The idempotency key of the (single) task created this task before; nothing changed.
    Existing(Box<Task>),
    /// A task they depend on does not exist; nothing changed.
    MissingDependency(Uuid),
    /// A task they depend on ended without completing; nothing changed.
    EndedDependency(Uuid, TaskStatus),
}

/// A workflow to record along with its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRecord {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// On whose behalf it is submitted.
    pub user_id: Option<String>,
}

/// How a failed attempt ends: back to the queue after a delay, or finally failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Queued` to retry, `Failed` to give up.
    pub status: TaskStatus,
    /// The error to record.
    pub error: String,
    /// When a requeued task may be claimed again.
    pub available_at: i64,
    /// Who the task belongs to afterwards: its pinned agent when requeued, the last holder when final.
    pub agent_id: Option<Uuid>,
}

/// Durable storage of tasks and their messages. Every method is one atomic statement; methods
/// that act on a held task match the attempt in the same statement, so a stale agent changes
/// nothing. Times are Unix milliseconds.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Inserts a task, waiting (for what it depends on), scheduled (for its time) or queued,
    /// keeping `fingerprint` of its request; when its (tenant-scoped) idempotency key exists
    /// already, answers that task instead.
    async fn insert(
        &self,
        task: &NewTask,
        fingerprint: Option<&str>,
        now: i64,
    ) -> Result<Insertion, StoreError>;

    /// Inserts `tasks` (without idempotency keys; `after` names tasks among them) in one
    /// transaction, all or none.
    async fn insert_many(&self, tasks: &[NewTask], now: i64) -> Result<Insertion, StoreError>;

    /// Records `workflow` and its `tasks` (planned: `after` names earlier tasks) in one
    /// transaction, all or none.
    async fn insert_workflow(
        &self,
        workflow: &WorkflowRecord,
        tasks: &[NewTask],
        now: i64,
    ) -> Result<Insertion, StoreError>;

    /// Returns a workflow with its tasks, in the order they were planned, and its edges.
    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowGraph>, StoreError>;

    /// Returns a page of workflows matching `filter`, newest first, and how many match.
    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: Page,
    ) -> Result<(Vec<Workflow>, u64), StoreError>;

    /// Cancels every unfinished task of a workflow and returns them.
    async fn cancel_workflow(&self, id: Uuid, now: i64) -> Result<Vec<Task>, StoreError>;

    /// Records a schedule; a taken name is a unique violation.
    async fn insert_schedule(&self, schedule: &Schedule) -> Result<Schedule, StoreError>;

    /// Rewrites a schedule's name, expression, zone, task, pause and next tick; `None` when it
    /// is gone.
    async fn update_schedule(&self, schedule: &Schedule) -> Result<Option<Schedule>, StoreError>;

    /// Returns a schedule.
    async fn schedule(&self, id: Uuid) -> Result<Option<Schedule>, StoreError>;

    /// Deletes a schedule; `false` when there was none.
    async fn delete_schedule(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Returns a page of schedules (of `user_id`, when given), newest first, and how many.
    async fn list_schedules(
        &self,
        user_id: Option<&str>,
        page: Page,
    ) -> Result<(Vec<Schedule>, u64), StoreError>;

    /// Returns up to `limit` running schedules due by `now`, earliest first.
    async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<Schedule>, StoreError>;

    /// Returns when the next running schedule is due, if any runs.
    async fn next_schedule_due(&self) -> Result<Option<i64>, StoreError>;

    /// Moves a schedule whose tick `fired` created its task on to tick `next`; `false` when
    /// another replica moved it first.
    async fn advance_schedule(
        &self,
        id: Uuid,
        fired: i64,
        next: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Returns the tasks that depend on task `id`.
    async fn dependents(&self, id: Uuid) -> Result<Vec<Task>, StoreError>;

    /// Returns a task by id.
    async fn get(&self, id: Uuid) -> Result<Option<Task>, StoreError>;

    /// Returns those of `ids` that exist, in no particular order.
    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Task>, StoreError>;

    /// Returns the version of each of `ids` that exists.
    async fn versions(&self, ids: &[Uuid]) -> Result<Vec<TaskVersion>, StoreError>;

    /// Returns what up to `limit` queued tasks that became claimable after `after` and by
    /// `until` ask of their taker, oldest first.
    async fn ready_between(
        &self,
        after: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<ReadyWork>, StoreError>;

    /// Returns a page of tasks matching `filter`, newest first, and how many match in all.
    async fn list(&self, filter: &TaskFilter, page: Page) -> Result<(Vec<Task>, u64), StoreError>;

    /// Cancels a scheduled, queued or active task; `None` when the task is missing or already
    /// final.
    async fn cancel(&self, id: Uuid, now: i64) -> Result<Option<Task>, StoreError>;

    /// Queues a failed or cancelled task again with a fresh attempt budget; `None` when the
    /// task is missing or in another status.
    async fn retry(&self, id: Uuid, now: i64) -> Result<Option<Task>, StoreError>;

    /// Queues up to `limit` scheduled tasks that are due by `now`, earliest first.
    async fn queue_due(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError>;

    /// Returns when the next scheduled task is due, if any task is scheduled.
    async fn next_due(&self) -> Result<Option<i64>, StoreError>;

    /// Returns a page of a task's attempts, oldest first, and how many it made.
    async fn attempts(&self, task_id: Uuid, page: Page) -> Result<(Vec<Attempt>, u64), StoreError>;

    /// Claims ready tasks for an agent atomically: tasks pinned to it, and unpinned tasks whose
    /// required capabilities are all among its capabilities, highest priority first, then
    /// oldest; at most `claim.max_tasks`, and never so many that the agent holds more than
    /// `claim.max_concurrency`. Each gets a fresh lease and one more attempt.
    async fn claim(&self, claim: &Claim, now: i64) -> Result<Vec<Task>, StoreError>;

    /// Returns the agents that hold active tasks.
    async fn active_agents(&self) -> Result<Vec<Uuid>, StoreError>;

    /// Counts the tasks in each status that has any.
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Counts the active tasks of each of `agent_ids` that holds any.
    async fn count_active(&self, agent_ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, StoreError>;

    /// Ends every active attempt of `agent_id` (gone or offline) as a lease expiry does,
    /// recording `error`.
    async fn requeue_agent_tasks(
        &self,
        agent_id: Uuid,
        error: &str,
        now: i64,
    ) -> Result<Vec<Task>, StoreError>;

    /// Squares what `agent_id` holds with what it says it holds (`listed`), in one
    /// transaction: renews the leases of the listed tasks it holds, ends as lost each active
    /// task it holds unlisted that it claimed before `claimed_before` (recording `error`), and
    /// returns those ended tasks and the ids of listed tasks it no longer holds.
    async fn sync_held(
        &self,
        agent_id: Uuid,
        listed: &[Uuid],
        claimed_before: i64,
        error: &str,
        now: i64,
    ) -> Result<(Vec<Task>, Vec<Uuid>), StoreError>;

    /// Records progress and renews the lease, if `lease` names the current attempt.
    async fn progress(
        &self,
        id: Uuid,
        lease: &LeaseRef,
        percent: i32,
        message: Option<&str>,
        now: i64,
    ) -> Result<Option<Task>, StoreError>;

    /// Completes, in one transaction, each task whose current attempt its completion names,
    /// and returns those it completed (in no particular order).
    async fn complete_many(
        &self,
        completions: &[Completion],
        now: i64,
    ) -> Result<Vec<Task>, StoreError>;

    /// Ends the attempt holding `lease_id` as `release` says; `None` if that attempt is over.
    async fn release(
        &self,
        id: Uuid,
        lease_id: Uuid,
        release: &Release,
        now: i64,
    ) -> Result<Option<Task>, StoreError>;

    /// Ends up to `limit` attempts whose lease expired before `now`: requeued while attempts
    /// remain, failed otherwise.
    async fn requeue_expired(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError>;

    /// Deletes up to `limit` final tasks (and their messages) that finished before `before`,
    /// the longest finished first; when fewer than `limit` were left, also up to `limit`
    /// workflows left without tasks. Returns how many tasks it deleted.
    async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64, StoreError>;

    /// Compacts the task counts that back list totals and [`TaskStore::count_by_status`], where
    /// the backend appends them as deltas; the counts stay the same.
    async fn fold_counts(&self) -> Result<(), StoreError>;

    /// Adds a message; `None` when the task does not exist.
    async fn add_message(
        &self,
        message: &NewMessage,
        now: i64,
    ) -> Result<Option<Message>, StoreError>;

    /// Returns a page of the messages in `scope`, and how many there are.
    async fn list_messages(
        &self,
        scope: &MessageScope,
        page: Page,
    ) -> Result<(Vec<Message>, u64), StoreError>;
}

/// Applies the tasks service's migrations to `pool` and returns the store for its backend.
pub async fn open(pool: Pool) -> Result<Arc<dyn TaskStore>, sqlx::migrate::MigrateError> {
    match pool {
        Pool::Sqlite(pools) => {
            let migrator = sqlx::migrate!("./migrations/sqlite");
            swarm_kit::db::migrate(&Pool::Sqlite(pools.clone()), "tasks", migrator).await?;
            Ok(Arc::new(SqliteTaskStore::new(pools)))
        }
        Pool::Postgres(pool) => {
            let migrator = sqlx::migrate!("./migrations/postgres");
            swarm_kit::db::migrate(&Pool::Postgres(pool.clone()), "tasks", migrator).await?;
            Ok(Arc::new(PostgresTaskStore::new(pool)))
        }
    }
}

//! Reads of current task state from memory, safe only where this replica is the database's
//! sole writer. [`CurrentStore`] wraps the task storage: every write passes through it, and after
//! each one commits (before it is answered) the written tasks' stamps move on, so an entry read
//! before that write is never served again. A read fills the cache with the stamp taken before
//! it went to the database, so a write that lands in between leaves it dead. Entries are served
//! only while [`SoleWriter`] holds: no other replica can write meanwhile (see the PostgreSQL
//! writer lease), and a new term of sole writing starts from an empty cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use swarm_kit::StoreError;
use swarm_kit::page::Page;
use uuid::Uuid;

use crate::domain::{
    Attempt, Claim, Completion, LeaseRef, Message, MessageScope, NewMessage, NewTask, ReadyWork,
    Schedule, Task, TaskFilter, Workflow, WorkflowFilter, WorkflowGraph,
};
use crate::storage::{Insertion, Release, TaskStore, TaskVersion, WorkflowRecord};

/// Stripes of write counters: a write moves on the stamps of its stripe's tasks only.
const STRIPES: usize = 64;
/// How long an entry is kept unread.
const IDLE: Duration = Duration::from_secs(300);

/// Whether this replica is, for now, the only one writing its database: confirmed until some
/// instant, and the term of sole writing that confirmation belongs to. Without confirmations
/// (SQLite, or a replica that shares its database) reads are never served from memory.
#[derive(Debug)]
pub struct SoleWriter {
    origin: Instant,
    /// Milliseconds after `origin` until which sole writing is confirmed (0: not sole).
    until: AtomicU64,
    /// Counts the times sole writing began.
    term: AtomicU64,
}

impl Default for SoleWriter {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            term: AtomicU64::new(0),
        }
    }
}

impl SoleWriter {
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// The term of sole writing under way, if any.
    pub fn term(&self) -> Option<u64> {
        let term = self.term.load(Ordering::SeqCst);
        (self.millis(Instant::now()) < self.until.load(Ordering::SeqCst)).then_some(term)
    }

    /// Starts a new term of sole writing, confirmed until `until`.
    pub fn begin(&self, until: Instant) {
        self.term.fetch_add(1, Ordering::SeqCst);
        self.until.store(self.millis(until), Ordering::SeqCst);
    }

    /// Starts a new term of sole writing that lasts until [`SoleWriter::end`] (for a lock the
    /// operating system holds as long as the process lives).
    pub fn begin_held(&self) {
        self.term.fetch_add(1, Ordering::SeqCst);
        self.until.store(u64::MAX, Ordering::SeqCst);
    }

    /// Extends the term under way to `until`.
    pub fn confirm(&self, until: Instant) {
        self.until.fetch_max(self.millis(until), Ordering::SeqCst);
    }

    /// Ends sole writing now.
    pub fn end(&self) {
        self.until.store(0, Ordering::SeqCst);
    }
}

/// How long a tasks service waits for its place among the writers before it gives up.
pub const JOIN_WAIT: Duration = Duration::from_secs(5);

/// Why a tasks service could not join the writers of its database.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Meant to write alone, it found another tasks service on the database.
    #[error(
        "another tasks service runs on this database, and a sole writer (SWARM_TASKS_SOLE_WRITER=true) must be alone"
    )]
    NotAlone,
    /// A sole writer runs on the database.
    #[error(
        "a tasks service that writes alone (SWARM_TASKS_SOLE_WRITER=true) runs on this database"
    )]
    SoleWriterRuns,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The lock file beside a SQLite database could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    LockFile {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<JoinError> for swarm_kit::RunError {
    fn from(error: JoinError) -> Self {
        match error {
            JoinError::Database(error) => Self::Database(error),
            JoinError::LockFile { path, source } => Self::Io(std::io::Error::new(
                source.kind(),
                format!("cannot lock {path}: {source}"),
            )),
            refused => swarm_kit::config::ConfigError::new(
                "SWARM_TASKS_SOLE_WRITER",
                matches!(refused, JoinError::NotAlone),
                refused,
            )
            .into(),
        }
    }
}

/// When an entry was read: the term, and the write counters of all tasks and of its stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    term: u64,
    all: u64,
    stripe: u64,
}

/// Task storage that serves current task state from memory while its replica writes alone.
pub struct CurrentStore {
    inner: Arc<dyn TaskStore>,
    sole: Arc<SoleWriter>,
    entries: moka::sync::Cache<Uuid, (Stamp, Arc<Task>)>,
    all: AtomicU64,
    stripes: [AtomicU64; STRIPES],
}

impl CurrentStore {
    /// Wraps `inner`, serving reads from memory while `sole` holds; the cache takes at most
    /// `bytes` of memory.
    pub fn new(inner: Arc<dyn TaskStore>, sole: Arc<SoleWriter>, bytes: u64) -> Self {
        Self {
            inner,
            sole,
            entries: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, (_, task): &(Stamp, Arc<Task>)| task.weight())
                .time_to_idle(IDLE)
                .build(),
            all: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn stripe(&self, id: Uuid) -> &AtomicU64 {
        &self.stripes[(id.as_u128() % STRIPES as u128) as usize]
    }

    /// The stamp a read of `id` starting now gets; `None` when reads are not cached.
    fn stamp(&self, id: Uuid) -> Option<Stamp> {
        Some(Stamp {
            term: self.sole.term()?,
            all: self.all.load(Ordering::SeqCst),
            stripe: self.stripe(id).load(Ordering::SeqCst),
        })
    }

    /// Task `id` from memory, if it was read under the stamp `now` (so nothing wrote it since).
    fn fresh(&self, id: Uuid, now: Stamp) -> Option<Task> {
        let (stamp, task) = self.entries.get(&id)?;
        (stamp == now).then(|| Task::clone(&task))
    }

    /// Task `id` was (or may have been) written.
    fn touch(&self, id: Uuid) {
        self.stripe(id).fetch_add(1, Ordering::SeqCst);
    }

    /// Tasks no write names may have changed.
    fn touch_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
    }

    /// `tasks` were written; one with dependents may have changed them too.
    fn touched_tasks(&self, tasks: &[Task]) {
        if tasks.iter().any(|task| task.dependent_count > 0) {
            self.touch_all();
        }
        tasks.iter().for_each(|task| self.touch(task.id));
    }

    fn touched(&self, written: &Result<Vec<Task>, StoreError>) {
        match written {
            Ok(tasks) => self.touched_tasks(tasks),
            Err(_) => self.touch_all(),
        }
    }

    fn touched_one(&self, id: Uuid, written: &Result<Option<Task>, StoreError>) {
        self.touch(id);
        if let Ok(Some(task)) = written {
            self.touched_tasks(std::slice::from_ref(task));
        }
    }

    /// New tasks count their parents' dependents.
    fn touch_parents(&self, tasks: &[NewTask]) {
        tasks
            .iter()
            .flat_map(|task| &task.depends_on)
            .for_each(|parent| self.touch(*parent));
    }
}

#[async_trait]
impl TaskStore for CurrentStore {
    async fn insert(
        &self,
        task: &NewTask,
        fingerprint: Option<&str>,
        now: i64,
    ) -> Result<Insertion, StoreError> {
        let inserted = self.inner.insert(task, fingerprint, now).await;
        self.touch_parents(std::slice::from_ref(task));
        inserted
    }

    async fn insert_many(&self, tasks: &[NewTask], now: i64) -> Result<Insertion, StoreError> {
        let inserted = self.inner.insert_many(tasks, now).await;
        self.touch_parents(tasks);
        inserted
    }

    async fn dependents(&self, id: Uuid) -> Result<Vec<Task>, StoreError> {
        self.inner.dependents(id).await
    }

    async fn insert_workflow(
        &self,
        workflow: &WorkflowRecord,
        tasks: &[NewTask],
        now: i64,
    ) -> Result<Insertion, StoreError> {
        let inserted = self.inner.insert_workflow(workflow, tasks, now).await;
        self.touch_parents(tasks);
        inserted
    }

    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowGraph>, StoreError> {
        self.inner.workflow(id).await
    }

    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: Page,
    ) -> Result<(Vec<Workflow>, u64), StoreError> {
        self.inner.list_workflows(filter, page).await
    }

    async fn cancel_workflow(&self, id: Uuid, now: i64) -> Result<Vec<Task>, StoreError> {
        let cancelled = self.inner.cancel_workflow(id, now).await;
        self.touch_all();
        cancelled
    }

    async fn insert_schedule(&self, schedule: &Schedule) -> Result<Schedule, StoreError> {
        self.inner.insert_schedule(schedule).await
    }

    async fn update_schedule(&self, schedule: &Schedule) -> Result<Option<Schedule>, StoreError> {
        self.inner.update_schedule(schedule).await
    }

    async fn schedule(&self, id: Uuid) -> Result<Option<Schedule>, StoreError> {
        self.inner.schedule(id).await
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_schedule(id).await
    }

    async fn list_schedules(
        &self,
        user_id: Option<&str>,
        page: Page,
    ) -> Result<(Vec<Schedule>, u64), StoreError> {
        self.inner.list_schedules(user_id, page).await
    }

    async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<Schedule>, StoreError> {
        self.inner.due_schedules(now, limit).await
    }

    async fn next_schedule_due(&self) -> Result<Option<i64>, StoreError> {
        self.inner.next_schedule_due().await
    }

    async fn advance_schedule(
        &self,
        id: Uuid,
        fired: i64,
        next: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner.advance_schedule(id, fired, next, now).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        let stamp = self.stamp(id);
        if let Some(task) = stamp.and_then(|now| self.fresh(id, now)) {
            return Ok(Some(task));
        }
        let task = self.inner.get(id).await?;
        if let (Some(stamp), Some(task)) = (stamp, &task) {
            self.entries.insert(id, (stamp, Arc::new(task.clone())));
        }
        Ok(task)
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Task>, StoreError> {
        self.inner.get_many(ids).await
    }

    async fn versions(&self, ids: &[Uuid]) -> Result<Vec<TaskVersion>, StoreError> {
        self.inner.versions(ids).await
    }

    async fn ready_between(
        &self,
        after: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<ReadyWork>, StoreError> {
        self.inner.ready_between(after, until, limit).await
    }

    async fn list(&self, filter: &TaskFilter, page: Page) -> Result<(Vec<Task>, u64), StoreError> {
        self.inner.list(filter, page).await
    }

    async fn cancel(&self, id: Uuid, now: i64) -> Result<Option<Task>, StoreError> {
        let cancelled = self.inner.cancel(id, now).await;
        self.touched_one(id, &cancelled);
        cancelled
    }

    async fn retry(&self, id: Uuid, now: i64) -> Result<Option<Task>, StoreError> {
        let retried = self.inner.retry(id, now).await;
        self.touched_one(id, &retried);
        retried
    }

    async fn queue_due(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        let queued = self.inner.queue_due(now, limit).await;
        self.touched(&queued);
        queued
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.inner.next_due().await
    }

    async fn attempts(&self, task_id: Uuid, page: Page) -> Result<(Vec<Attempt>, u64), StoreError> {
        self.inner.attempts(task_id, page).await
    }

    async fn claim(&self, claim: &Claim, now: i64) -> Result<Vec<Task>, StoreError> {
        let claimed = self.inner.claim(claim, now).await;
        self.touched(&claimed);
        claimed
    }

    async fn active_agents(&self) -> Result<Vec<Uuid>, StoreError> {
        self.inner.active_agents().await
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner.count_by_status().await
    }

    async fn fold_counts(&self) -> Result<(), StoreError> {
        self.inner.fold_counts().await
    }

    async fn count_active(&self, agent_ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, StoreError> {
        self.inner.count_active(agent_ids).await
    }

    async fn requeue_agent_tasks(
        &self,
        agent_id: Uuid,
        error: &str,
        now: i64,
    ) -> Result<Vec<Task>, StoreError> {
        let requeued = self.inner.requeue_agent_tasks(agent_id, error, now).await;
        self.touched(&requeued);
        requeued
    }

    async fn sync_held(
        &self,
        agent_id: Uuid,
        listed: &[Uuid],
        claimed_before: i64,
        error: &str,
        now: i64,
    ) -> Result<(Vec<Task>, Vec<Uuid>), StoreError> {
        let synced = self
            .inner
            .sync_held(agent_id, listed, claimed_before, error, now)
            .await;
        listed.iter().for_each(|id| self.touch(*id));
        match &synced {
            Ok((ended, _)) => self.touched_tasks(ended),
            Err(_) => self.touch_all(),
        }
        synced
    }

    async fn progress(
        &self,
        id: Uuid,
        lease: &LeaseRef,
        percent: i32,
        message: Option<&str>,
        now: i64,
    ) -> Result<Option<Task>, StoreError> {
        let reported = self.inner.progress(id, lease, percent, message, now).await;
        self.touched_one(id, &reported);
        reported
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
        now: i64,
    ) -> Result<Vec<Task>, StoreError> {
        let completed = self.inner.complete_many(completions, now).await;
        completions
            .iter()
            .for_each(|completion| self.touch(completion.id));
        self.touched(&completed);
        completed
    }

    async fn release(
        &self,
        id: Uuid,
        lease_id: Uuid,
        release: &Release,
        now: i64,
    ) -> Result<Option<Task>, StoreError> {
        let released = self.inner.release(id, lease_id, release, now).await;
        self.touched_one(id, &released);
        released
    }

    async fn requeue_expired(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        let requeued = self.inner.requeue_expired(now, limit).await;
        self.touched(&requeued);
        requeued
    }

    async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let pruned = self.inner.prune_finished(before, limit).await;
        self.touch_all();
        pruned
    }

    async fn add_message(
        &self,
        message: &NewMessage,
        now: i64,
    ) -> Result<Option<Message>, StoreError> {
        let added = self.inner.add_message(message, now).await;
        self.touch(message.task_id);
        added
    }

    async fn list_messages(
        &self,
        scope: &MessageScope,
        page: Page,
    ) -> Result<(Vec<Message>, u64), StoreError> {
        self.inner.list_messages(scope, page).await
    }
}

//! The task queue: validates requests, runs them against storage, wakes long-polling claimers
//! when work arrives, publishes every change to watchers, and explains refusals (a missing task,
//! a final task, a stale lease) precisely. Finished tasks never change again, so reads of them
//! (the hottest reads: clients polling for results) are answered from memory.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use swarm_kit::metrics::{Registry, names};
use swarm_kit::page::Page;
use swarm_kit::time::now_millis;
use swarm_kit::validate::check_text;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::domain::idempotency::fingerprint;
use crate::domain::task::{MAX_CLAIM, MAX_ERROR_CHARS, json_text};
use crate::domain::{
    Claim, LeaseRef, Message, MessageScope, NewMessage, NewTask, RetryPolicy, Task, TaskFilter,
    TaskStatus,
};
use crate::error::TaskError;
use crate::storage::{Release, TaskStore};

/// The longest a claim may wait for work.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// The most expired leases one sweep statement ends.
const SWEEP_BATCH: u32 = 500;
/// How many finished tasks are kept in memory for reads.
const FINISHED_CACHE_ENTRIES: u64 = 10_000;
/// How long a finished task is kept in memory (pruning elsewhere is noticed within this time).
const FINISHED_CACHE_TTL: Duration = Duration::from_secs(600);
/// How long after a claim a task may go unlisted by its agent's heartbeats before it is taken
/// back: a heartbeat sent while the claim's answer was on its way does not list it yet.
pub const CLAIM_ANSWER_GRACE: Duration = Duration::from_secs(5);
/// The most held tasks one heartbeat may list.
const MAX_LISTED_HELD: usize = 1000;
/// The error recorded on an attempt its agent does not hold.
const NOT_HELD: &str = "the agent does not hold the task (the answer to its claim was lost)";
/// The longest progress note kept, in characters.
const MAX_PROGRESS_MESSAGE_CHARS: usize = 1024;

/// How the queue paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Backoff between attempts of a failed task.
    pub retry: RetryPolicy,
    /// How often a waiting claimer or watcher looks again without a wake-up (changes made by
    /// other replicas, retries whose backoff ended).
    pub poll_interval: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// What squaring an agent's held tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSync {
    /// Listed tasks that were cancelled.
    pub cancelled: Vec<Uuid>,
    /// Unlisted tasks taken back from the agent.
    pub released: Vec<Uuid>,
}

/// The task queue of one tasks-service process.
pub struct TaskQueue {
    store: Arc<dyn TaskStore>,
    settings: QueueSettings,
    work_ready: Notify,
    changes: broadcast::Sender<Task>,
    finished: moka::sync::Cache<Uuid, Task>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueue")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TaskQueue {
    /// Builds a queue over `store`; waiting claims and watches end when `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn TaskStore>,
        settings: QueueSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (changes, _) = broadcast::channel(1024);
        Arc::new(Self {
            store,
            settings,
            work_ready: Notify::new(),
            changes,
            finished: moka::sync::Cache::builder()
                .max_capacity(FINISHED_CACHE_ENTRIES)
                .time_to_live(FINISHED_CACHE_TTL)
                .build(),
            shutdown,
        })
    }

    /// Creates a task, or returns the one its idempotency key created before (`false`).
    pub async fn create(&self, task: NewTask) -> Result<(Task, bool), TaskError> {
        let task = task.validated()?;
        let fingerprint = task.idempotency_key.is_some().then(|| fingerprint(&task));
        let (task, created) = self
            .store
            .insert(&task, fingerprint.as_deref(), now_millis())
            .await?;
        // Tasks keyed before fingerprints were kept have none, and match any request.
        if !created && task.request_hash.is_some() && task.request_hash != fingerprint {
            return Err(TaskError::IdempotencyKeyReused);
        }
        if created {
            self.publish(task.clone());
            self.work_ready.notify_waiters();
        }
        Ok((task, created))
    }

    /// Returns one task.
    pub async fn get(&self, id: Uuid) -> Result<Task, TaskError> {
        if let Some(task) = self.finished.get(&id) {
            return Ok(task);
        }
        let task = self.store.get(id).await?.ok_or(TaskError::NotFound(id))?;
        self.remember_if_finished(&task);
        Ok(task)
    }

    /// Returns a page of tasks, newest first, and the total that match.
    pub async fn list(
        &self,
        filter: &TaskFilter,
        page: Page,
    ) -> Result<(Vec<Task>, u64), TaskError> {
        filter.check()?;
        Ok(self.store.list(filter, page).await?)
    }

    /// Cancels a queued or active task; a final one is refused.
    pub async fn cancel(&self, id: Uuid) -> Result<Task, TaskError> {
        match self.store.cancel(id, now_millis()).await? {
            Some(task) => Ok(self.publish(task)),
            None => {
                let task = self.get(id).await?;
                Err(TaskError::WrongStatus {
                    id,
                    status: task.status,
                })
            }
        }
    }

    /// Claims up to `claim.max_tasks` tasks, waiting up to `claim.wait` (at most a minute) for
    /// work when none is ready. New tasks wake waiting claimers at once; a periodic look covers
    /// work that becomes ready otherwise. Returns an empty list when the wait ends without work.
    pub async fn claim(&self, claim: Claim) -> Result<Vec<Task>, TaskError> {
        if !(1..=MAX_CLAIM).contains(&claim.max_tasks) {
            return Err(TaskError::Invalid(format!(
                "max_tasks must be between 1 and {MAX_CLAIM}"
            )));
        }
        let deadline = Instant::now() + claim.wait.min(MAX_CLAIM_WAIT);
        loop {
            // Register for a wake-up before looking, so work created meanwhile is not missed.
            let mut woken = pin!(self.work_ready.notified());
            woken.as_mut().enable();
            let tasks = self.store.claim(&claim, now_millis()).await?;
            if !tasks.is_empty() {
                let claimed_at = now_millis();
                for task in &tasks {
                    let waited = u64::try_from(claimed_at - task.available_at).unwrap_or(0);
                    if let Some(registry) = Registry::current() {
                        registry
                            .histogram(&names::TASK_QUEUE_WAIT, &[])
                            .observe(Duration::from_millis(waited));
                    }
                    debug!(task_id = %task.id, agent_id = %claim.agent_id, attempt = task.attempts, "task claimed");
                    self.publish(task.clone());
                }
                return Ok(tasks);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = (deadline - now).min(self.settings.poll_interval);
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(nap) => {}
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Counts the tasks in every status; statuses without tasks count zero.
    pub async fn count_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, TaskError> {
        let counts = self.store.count_by_status().await?;
        Ok(TaskStatus::ALL
            .iter()
            .map(|status| {
                let count = counts
                    .iter()
                    .find(|(name, _)| name == status.as_str())
                    .map_or(0, |(_, count)| u64::try_from(*count).unwrap_or(0));
                (*status, count)
            })
            .collect())
    }

    /// Counts the active tasks of each of `agent_ids` that holds any.
    pub async fn count_active(&self, agent_ids: &[Uuid]) -> Result<Vec<(Uuid, u32)>, TaskError> {
        let counts = self.store.count_active(agent_ids).await?;
        Ok(counts
            .into_iter()
            .map(|(id, count)| (id, u32::try_from(count).unwrap_or(u32::MAX)))
            .collect())
    }

    /// Returns the agents that hold active tasks.
    pub async fn active_agents(&self) -> Result<Vec<Uuid>, TaskError> {
        Ok(self.store.active_agents().await?)
    }

    /// Returns the tasks of an agent that is gone or offline to the queue (each such attempt
    /// counts; a task out of attempts fails). Returns how many attempts it ended.
    pub async fn requeue_agent_tasks(
        &self,
        agent_id: Uuid,
        reason: &str,
    ) -> Result<usize, TaskError> {
        let tasks = self
            .store
            .requeue_agent_tasks(agent_id, reason, now_millis())
            .await?;
        for task in &tasks {
            let _span = task_span("task.taken_back", task).entered();
            warn!(task_id = %task.id, %agent_id, reason, status = %task.status, "task taken back from agent");
            self.publish(task.clone());
        }
        if !tasks.is_empty() {
            self.work_ready.notify_waiters();
        }
        Ok(tasks.len())
    }

    /// Squares what an agent says it holds (`listed`, from its heartbeat) with what the queue
    /// says it holds: renews the leases of the listed tasks; takes back each task it was handed
    /// more than [`CLAIM_ANSWER_GRACE`] ago but does not list (the answer to its claim was
    /// lost), which counts as a lost attempt; and names the listed tasks that were cancelled,
    /// which the agent should stop working on.
    pub async fn sync_held(&self, agent_id: Uuid, listed: &[Uuid]) -> Result<HeldSync, TaskError> {
        if listed.len() > MAX_LISTED_HELD {
            return Err(TaskError::Invalid(format!(
                "an agent may list at most {MAX_LISTED_HELD} held tasks"
            )));
        }
        let now = now_millis();
        let grace = i64::try_from(CLAIM_ANSWER_GRACE.as_millis()).unwrap_or(i64::MAX / 2);
        let (released, cancelled) = self
            .store
            .sync_held(agent_id, listed, now - grace, NOT_HELD, now)
            .await?;
        for task in &released {
            let _span = task_span("task.taken_back", task).entered();
            warn!(task_id = %task.id, %agent_id, status = %task.status, "task taken back: its agent does not hold it");
            self.publish(task.clone());
        }
        if !released.is_empty() {
            self.work_ready.notify_waiters();
        }
        Ok(HeldSync {
            cancelled,
            released: released.iter().map(|task| task.id).collect(),
        })
    }

    /// Records progress (0 to 100) on a held task and renews its lease.
    pub async fn progress(
        &self,
        id: Uuid,
        lease: LeaseRef,
        percent: i32,
        message: Option<String>,
    ) -> Result<Task, TaskError> {
        if !(0..=100).contains(&percent) {
            return Err(TaskError::Invalid(
                "percent must be between 0 and 100".into(),
            ));
        }
        if message
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_PROGRESS_MESSAGE_CHARS)
        {
            return Err(TaskError::Invalid(format!(
                "progress message must be at most {MAX_PROGRESS_MESSAGE_CHARS} characters"
            )));
        }
        if let Some(message) = &message {
            check_text("progress message", message)?;
        }
        let updated = self
            .store
            .progress(id, &lease, percent, message.as_deref(), now_millis())
            .await?;
        self.held_outcome(id, lease, updated).await
    }

    /// Completes a held task with a result (JSON text; empty means null).
    pub async fn complete(
        &self,
        id: Uuid,
        lease: LeaseRef,
        result: String,
    ) -> Result<Task, TaskError> {
        let result = json_text("result", result)?;
        let updated = self
            .store
            .complete(id, &lease, &result, now_millis())
            .await?;
        match updated {
            Some(task) => Ok(self.publish(task)),
            None => answer_repeat(self.get(id).await?, lease, |task| {
                task.result.as_deref() == Some(result.as_str())
            }),
        }
    }

    /// Fails a held task. While it is retryable and attempts remain it goes back to the queue
    /// after an exponential backoff with jitter; otherwise it is finally `failed`.
    pub async fn fail(
        &self,
        id: Uuid,
        lease: LeaseRef,
        error: String,
        retryable: bool,
    ) -> Result<Task, TaskError> {
        if error.trim().is_empty() {
            return Err(TaskError::Invalid("error must not be empty".into()));
        }
        check_text("error", &error)?;
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        let task = self.get(id).await?;
        let same_error = |task: &Task| task.error.as_deref() == Some(error.as_str());
        let Some(lease_id) = task.lease_id.filter(|_| lease.holds(&task)) else {
            return answer_repeat(task, lease, same_error);
        };
        let now = now_millis();
        let release = if retryable && task.attempts < task.max_attempts {
            let delay = self.settings.retry.delay(task.attempts.unsigned_abs());
            Release {
                status: TaskStatus::Queued,
                error: error.clone(),
                available_at: now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                agent_id: task.pinned_agent_id,
            }
        } else {
            Release {
                status: TaskStatus::Failed,
                error: error.clone(),
                available_at: task.available_at,
                agent_id: task.agent_id,
            }
        };
        match self.store.release(id, lease_id, &release, now).await? {
            Some(task) => Ok(self.publish(task)),
            // The attempt ended between our read and our write (expired, cancelled, or a
            // repeat of this very report that won the race).
            None => answer_repeat(self.get(id).await?, lease, same_error),
        }
    }

    /// Streams a task's states: the current one first, then each change, ending after a final
    /// status, when the receiver is dropped, or at shutdown. Changes made by other replicas are
    /// picked up by a periodic re-read.
    pub async fn watch(
        self: &Arc<Self>,
        id: Uuid,
    ) -> Result<mpsc::Receiver<Result<Task, TaskError>>, TaskError> {
        let mut changes = self.changes.subscribe();
        let current = self.get(id).await?;
        let (sender, receiver) = mpsc::channel(16);
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = current;
            if sender.send(Ok(last.clone())).await.is_err() || last.status.is_final() {
                return;
            }
            let period = queue.settings.poll_interval;
            let mut reread = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                // Changes announced in this process come first; the re-read catches the rest.
                let next = tokio::select! {
                    biased;
                    change = changes.recv() => match change {
                        Ok(task) if task.id == id => Ok(task),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => queue.get(id).await,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = reread.tick() => queue.get(id).await,
                    () = sender.closed() => return,
                    () = queue.shutdown.cancelled() => return,
                };
                match next {
                    Ok(task) if task == last => {}
                    Ok(task) => {
                        let done = task.status.is_final();
                        if sender.send(Ok(task.clone())).await.is_err() || done {
                            return;
                        }
                        last = task;
                    }
                    Err(error) => {
                        // Deleted (pruned) or storage trouble: tell the watcher and stop.
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }

    /// Adds a message to a task's conversation.
    pub async fn add_message(&self, message: NewMessage) -> Result<Message, TaskError> {
        let message = message.validated()?;
        self.store
            .add_message(&message, now_millis())
            .await?
            .ok_or(TaskError::NotFound(message.task_id))
    }

    /// Returns a page of the messages in `scope`: one task's (oldest first; the task must
    /// exist) or recent ones (newest first).
    pub async fn list_messages(
        &self,
        scope: MessageScope,
        page: Page,
    ) -> Result<(Vec<Message>, u64), TaskError> {
        if let MessageScope::Task(task_id) = scope {
            self.get(task_id).await?;
        }
        Ok(self.store.list_messages(&scope, page).await?)
    }

    /// Ends every attempt whose lease expired: back to the queue while attempts remain, failed
    /// otherwise. Returns how many it ended.
    pub async fn sweep_expired_leases(&self) -> Result<usize, TaskError> {
        let mut ended = 0;
        loop {
            let tasks = self
                .store
                .requeue_expired(now_millis(), SWEEP_BATCH)
                .await?;
            for task in &tasks {
                let _span = task_span("task.lease_expired", task).entered();
                warn!(task_id = %task.id, attempts = task.attempts, status = %task.status, "lease expired");
                self.publish(task.clone());
            }
            ended += tasks.len();
            if tasks.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        if ended > 0 {
            self.work_ready.notify_waiters();
        }
        Ok(ended)
    }

    /// Deletes final tasks that finished more than `retention` ago. Returns how many.
    pub async fn prune_finished(&self, retention: Duration) -> Result<u64, TaskError> {
        let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let pruned = self.store.prune_finished(now_millis() - age).await?;
        if pruned > 0 {
            self.finished.invalidate_all();
        }
        Ok(pruned)
    }

    /// Wakes every waiting claimer, for work that became ready outside this process.
    pub fn wake_claimers(&self) {
        self.work_ready.notify_waiters();
    }

    /// Tells watchers about a task's new state and hands the task back.
    fn publish(&self, task: Task) -> Task {
        self.remember_if_finished(&task);
        // No watcher listening is fine: the send only fails when nobody subscribed.
        let _ = self.changes.send(task.clone());
        task
    }

    fn remember_if_finished(&self, task: &Task) {
        if task.status.is_final() {
            self.finished.insert(task.id, task.clone());
        }
    }

    async fn held_outcome(
        &self,
        id: Uuid,
        lease: LeaseRef,
        updated: Option<Task>,
    ) -> Result<Task, TaskError> {
        match updated {
            Some(task) => Ok(self.publish(task)),
            None => Err(refusal(&self.get(id).await?, lease)),
        }
    }
}

/// Answers a completion or failure that `lease` cannot make because its attempt is over: when
/// that attempt's own report ended it and `same_outcome` says this one repeats it (an answer
/// lost on the way), the task as it is; a different outcome is refused, and so is any other
/// caller.
fn answer_repeat(
    task: Task,
    lease: LeaseRef,
    same_outcome: impl Fn(&Task) -> bool,
) -> Result<Task, TaskError> {
    match (lease.reported(&task), same_outcome(&task)) {
        (true, true) => Ok(task),
        (true, false) => Err(TaskError::OutcomeDiffers {
            id: task.id,
            status: task.status,
        }),
        (false, _) => Err(refusal(&task, lease)),
    }
}

/// Explains why `lease` may not act on `task`.
fn refusal(task: &Task, lease: LeaseRef) -> TaskError {
    if task.status == TaskStatus::Active {
        TaskError::NotLeaseHolder {
            id: task.id,
            agent_id: lease.agent_id,
        }
    } else {
        TaskError::WrongStatus {
            id: task.id,
            status: task.status,
        }
    }
}

/// Opens the span of background work on `task`, linked to the trace that created the task.
fn task_span(name: &'static str, task: &Task) -> tracing::Span {
    let span = tracing::info_span!("task", otel.name = name, task.id = %task.id);
    swarm_kit::trace::link_to(&span, task.trace_parent.as_deref());
    span
}

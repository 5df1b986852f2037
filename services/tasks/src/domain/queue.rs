//! The task queue: validates requests, runs them against storage, wakes the one waiting claim
//! that can take new work, hands every change to the task's watchers, and explains refusals (a
//! missing task, a final task, a stale lease) precisely. Finished tasks never change again, so
//! reads of them (the hottest reads: clients polling for results) are answered from memory, up
//! to a budget in bytes. Delayed tasks wait as scheduled: a timer set for the next due one
//! queues it on time (and a claim that finds it due queues it first), so none is claimed early
//! and none waits for a poll. Times come from the database's clock ([`Clock`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use swarm_kit::clock::Clock;
use swarm_kit::metrics::{Registry, names};
use swarm_kit::page::Page;
use swarm_kit::validate::check_text;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::domain::group_commit::{Claims, Completions, Creates, GroupCommit};
use crate::domain::idempotency::fingerprint;
use crate::domain::task::{MAX_CLAIM, MAX_ERROR_CHARS, json_text};
use crate::domain::waiters::{ReadyWork, Waiters};
use crate::domain::watchers::{Seen, Watchers};
use crate::domain::{
    Attempt, Claim, Completion, Ending, LeaseRef, Message, MessageScope, NewMessage, NewTask,
    NewWorkflow, RetryPolicy, Task, TaskFilter, TaskStatus, Workflow, WorkflowFilter,
    WorkflowGraph,
};
use crate::error::TaskError;
use crate::storage::{Insertion, Release, TaskStore, TaskVersion, WorkflowRecord};

/// The longest a claim may wait for work.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// Lanes of claims that do not wait (see [`TaskQueue::claim_now`]).
const CLAIM_LANES: usize = 4;
/// The most tasks one batch creates.
pub const MAX_BATCH: usize = 1000;
/// The most dependencies one batch records (both backends bind two values each).
pub const MAX_BATCH_DEPENDENCIES: usize = 10_000;
/// The most expired leases one sweep statement ends.
const SWEEP_BATCH: u32 = 500;
/// How many finished tasks one pruning statement deletes at most.
const PRUNE_BATCH: u32 = 500;
/// The pause between pruning statements, for other writers.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);
/// How long a finished task is kept in memory (pruning elsewhere is noticed within this time).
const FINISHED_CACHE_TTL: Duration = Duration::from_secs(600);
/// How far back each look for ready work reaches past the previous one, for tasks whose
/// transaction committed a little after the time it stamped.
const READY_SLACK_MILLIS: i64 = 1_000;
/// The most ready tasks one look reads.
const READY_BATCH: u32 = 1_000;
/// How long tasks announced to waiting claims are remembered, so no task wakes two.
const ANNOUNCED_TTL: Duration = Duration::from_secs(30);
/// How many announced tasks are remembered.
const ANNOUNCED_ENTRIES: u64 = 200_000;
/// How many watched tasks one re-read asks storage for.
const REREAD_BATCH: usize = 500;
/// How long a look for ready work waits after a nudge, to serve several nudges at once.
const NUDGE_DEBOUNCE: Duration = Duration::from_millis(20);
/// How long after a claim a task may go unlisted by its agent's heartbeats before it is taken
/// back: a heartbeat sent while the claim's answer was on its way does not list it yet.
pub const CLAIM_ANSWER_GRACE: Duration = Duration::from_secs(5);
/// The most held tasks one heartbeat may list.
const MAX_LISTED_HELD: usize = 1000;
/// The error recorded on an attempt its agent does not hold.
const NOT_HELD: &str = "the agent does not hold the task (the answer to its claim was lost)";
/// The longest progress note kept, in characters.
const MAX_PROGRESS_MESSAGE_CHARS: usize = 1024;

/// How the queue paces and bounds itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Backoff between attempts of a failed task.
    pub retry: RetryPolicy,
    /// How often the queue looks again, for all waiting claims and watchers together, at what
    /// no wake-up announced (changes made by other replicas, retries whose backoff ended).
    pub poll_interval: Duration,
    /// The most watchers at once; more are refused as exhausted.
    pub max_watchers: usize,
    /// The memory finished tasks kept for reads may take, in bytes.
    pub finished_cache_bytes: u64,
    /// How long a watcher may leave a state unread before its watch ends.
    pub slow_watcher_limit: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_millis(500),
            max_watchers: 10_000,
            finished_cache_bytes: 64 * 1024 * 1024,
            slow_watcher_limit: Duration::from_secs(10),
        }
    }
}

/// What squaring an agent's held tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSync {
    /// Listed tasks the agent no longer holds (cancelled, timed out or taken back).
    pub cancelled: Vec<Uuid>,
    /// Unlisted tasks taken back from the agent.
    pub released: Vec<Uuid>,
}

/// The task queue of one tasks-service process.
pub struct TaskQueue {
    store: Arc<dyn TaskStore>,
    /// Independent creates, stored in shared transactions.
    creates: GroupCommit<Creates>,
    /// Completions, stored in shared transactions.
    completions: GroupCommit<Completions>,
    /// Claims that do not wait, merged per agent: an agent's claims always take the same lane,
    /// whose claims run one group at a time, while other lanes run beside it.
    claims: Vec<GroupCommit<Claims>>,
    settings: QueueSettings,
    clock: Arc<Clock>,
    waiters: Waiters,
    watchers: Arc<Watchers>,
    /// Tasks whose readiness was announced to the waiting claims already, with the time they
    /// became ready (a task requeued later is announced again).
    announced: moka::sync::Cache<Uuid, i64>,
    /// Asks for a look at ready work before the next interval.
    nudged: Notify,
    /// When the next scheduled task is due, as far as this process knows (`i64::MAX`: none).
    next_due: AtomicI64,
    finished: moka::sync::Cache<Uuid, Arc<Task>>,
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
    /// Builds a queue over `store` that tells time by `clock`, and starts its periodic look at
    /// what no wake-up announced; waiting claims and watches end when `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn TaskStore>,
        settings: QueueSettings,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let stamp = || {
            let clock = Arc::clone(&clock);
            move || clock.now_millis()
        };
        let creates = GroupCommit::start(Arc::clone(&store), stamp());
        let completions = GroupCommit::start(Arc::clone(&store), stamp());
        let claims = (0..CLAIM_LANES)
            .map(|_| GroupCommit::start(Arc::clone(&store), stamp()))
            .collect();
        let queue = Arc::new(Self {
            store,
            creates,
            completions,
            claims,
            settings,
            clock,
            waiters: Waiters::default(),
            watchers: Watchers::new(settings.max_watchers),
            announced: moka::sync::Cache::builder()
                .max_capacity(ANNOUNCED_ENTRIES)
                .time_to_live(ANNOUNCED_TTL)
                .build(),
            nudged: Notify::new(),
            next_due: AtomicI64::new(i64::MIN),
            finished: moka::sync::Cache::builder()
                .max_capacity(settings.finished_cache_bytes)
                .weigher(|_, task: &Arc<Task>| task.weight())
                .time_to_live(FINISHED_CACHE_TTL)
                .build(),
            shutdown,
        });
        tokio::spawn(keep_looking(Arc::downgrade(&queue)));
        queue
    }

    /// Returns the current time on the queue's clock.
    pub fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Creates a task, or returns the one its idempotency key created before (`false`).
    pub async fn create(&self, task: NewTask) -> Result<(Task, bool), TaskError> {
        let task = task.validated()?;
        self.check_dependencies(std::slice::from_ref(&task)).await?;
        let fingerprint = task.idempotency_key.is_some().then(|| fingerprint(&task));
        let insertion = if task.stands_alone() {
            self.creates.write(task).await?
        } else {
            self.store
                .insert(&task, fingerprint.as_deref(), self.now_millis())
                .await?
        };
        match dependencies_met(insertion)? {
            // Tasks keyed before fingerprints were kept have none, and match any request.
            Inserted::Existing(task)
                if task.request_hash.is_some() && task.request_hash != fingerprint =>
            {
                Err(TaskError::IdempotencyKeyReused)
            }
            Inserted::Existing(task) => Ok((*task, false)),
            Inserted::Created(mut created) => {
                let task = created
                    .pop()
                    .ok_or_else(|| TaskError::Invalid("the task was not created".into()))?;
                self.announce_ready(&task);
                Ok((task, true))
            }
        }
    }

    /// Creates the task a schedule's tick asks for; `None` when that tick created its task
    /// already (on this replica or another).
    pub async fn create_for_tick(&self, task: NewTask) -> Result<Option<Task>, TaskError> {
        let task = task.validated()?;
        let insertion = self.store.insert(&task, None, self.now_millis()).await?;
        match dependencies_met(insertion)? {
            Inserted::Created(mut created) => {
                let task = created.pop();
                if let Some(task) = &task {
                    self.announce_ready(task);
                }
                Ok(task)
            }
            Inserted::Existing(_) => Ok(None),
        }
    }

    /// Creates up to [`MAX_BATCH`] tasks at once, all or none; an invalid one is named by its
    /// index and nothing is created. Batch tasks carry no idempotency key; `after` names tasks
    /// of the batch a task waits for, which must come before it.
    pub async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Task>, TaskError> {
        if !(1..=MAX_BATCH).contains(&tasks.len()) {
            return Err(TaskError::Invalid(format!(
                "a batch holds 1 to {MAX_BATCH} tasks"
            )));
        }
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                let within =
                    |reason: String| TaskError::Invalid(format!("tasks[{index}].{reason}"));
                if task.idempotency_key.is_some() {
                    return Err(within("idempotency_key is not taken in a batch".into()));
                }
                if task.after.iter().any(|sibling| *sibling >= index) {
                    return Err(within(
                        "depends_on names a task that does not come before it".into(),
                    ));
                }
                task.validated().map_err(|error| match error {
                    TaskError::Invalid(reason) => within(reason),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_edges(&tasks)?;
        self.check_dependencies(&tasks).await?;
        let insertion = self.store.insert_many(&tasks, self.now_millis()).await?;
        let Inserted::Created(created) = dependencies_met(insertion)? else {
            return Err(TaskError::Invalid(
                "a batch takes no idempotency key".into(),
            ));
        };
        for task in &created {
            self.announce_ready(task);
        }
        Ok(created)
    }

    /// Creates a workflow and all its tasks in one transaction; a duplicate or unknown key or
    /// a cycle is refused and nothing is created.
    pub async fn create_workflow(&self, workflow: NewWorkflow) -> Result<WorkflowGraph, TaskError> {
        let record = WorkflowRecord {
            id: Uuid::now_v7(),
            name: workflow.name.clone(),
            user_id: workflow.user_id.clone(),
        };
        let tasks = workflow
            .plan()?
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                task.validated().map_err(|error| match error {
                    TaskError::Invalid(reason) => {
                        TaskError::Invalid(format!("tasks[{index}].{reason}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_edges(&tasks)?;
        self.check_dependencies(&tasks).await?;
        let insertion = self
            .store
            .insert_workflow(&record, &tasks, self.now_millis())
            .await?;
        let Inserted::Created(created) = dependencies_met(insertion)? else {
            return Err(TaskError::Invalid(
                "a workflow takes no idempotency key".into(),
            ));
        };
        for task in &created {
            self.announce_ready(task);
        }
        self.workflow(record.id).await
    }

    /// Returns a workflow with its tasks and its edges.
    pub async fn workflow(&self, id: Uuid) -> Result<WorkflowGraph, TaskError> {
        self.store
            .workflow(id)
            .await?
            .ok_or(TaskError::WorkflowNotFound(id))
    }

    /// Returns a page of workflows, newest first, and how many match.
    pub async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: Page,
    ) -> Result<(Vec<Workflow>, u64), TaskError> {
        Ok(self.store.list_workflows(filter, page).await?)
    }

    /// Cancels every unfinished task of a workflow (branches still running after another
    /// failed included); a workflow with nothing left to run is refused.
    pub async fn cancel_workflow(&self, id: Uuid) -> Result<WorkflowGraph, TaskError> {
        let cancelled = self.store.cancel_workflow(id, self.now_millis()).await?;
        let nothing_left = cancelled.is_empty();
        for task in cancelled {
            self.publish(task);
        }
        let graph = self.workflow(id).await?;
        if nothing_left {
            return Err(TaskError::WorkflowEnded {
                id,
                status: graph.workflow.status,
            });
        }
        Ok(graph)
    }

    /// Looks at the tasks `tasks` depend on: refuses those a client may not see (a client's
    /// tasks depend only on its own), and links the current span to the traces that created
    /// them, so a dependent's trace leads to its parents'.
    async fn check_dependencies(&self, tasks: &[NewTask]) -> Result<(), TaskError> {
        let mut wanted: Vec<Uuid> = tasks
            .iter()
            .flat_map(|task| task.depends_on.iter().copied())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        // One read for the whole batch, however many of its tasks depend on others.
        let parents: HashMap<Uuid, Task> = self
            .store
            .get_many(&wanted)
            .await?
            .into_iter()
            .map(|parent| (parent.id, parent))
            .collect();
        let span = tracing::Span::current();
        for parent in parents.values() {
            swarm_kit::trace::link_to(&span, parent.trace_parent.as_deref());
        }
        for task in tasks {
            let Some(tenant) = &task.tenant else { continue };
            let reachable = |id: &Uuid| {
                parents
                    .get(id)
                    .is_some_and(|parent| parent.user_id.as_ref() == Some(tenant))
            };
            if let Some(hidden) = task.depends_on.iter().find(|id| !reachable(id)) {
                return Err(missing_dependency(*hidden));
            }
        }
        Ok(())
    }

    /// Tells waiting claims about a task that just became ready: announced when it is queued,
    /// the timer set for it when it is scheduled; nothing while it waits.
    fn announce_ready(&self, task: &Task) {
        match task.status {
            TaskStatus::Scheduled => {
                let before = self.next_due.fetch_min(task.available_at, Ordering::SeqCst);
                if before > task.available_at {
                    // The timer is set for later: have it set again.
                    self.nudged.notify_one();
                }
            }
            TaskStatus::Queued => self.announce(&ReadyWork::of(task)),
            _ => {}
        }
    }

    /// Hands the tasks that depend on `task`, which just ended, to their watchers, and those
    /// its completion made ready to waiting claims (storage released or cancelled them in
    /// the statement that ended it).
    async fn settle_dependents(&self, task: &Task) {
        if task.dependent_count == 0 || !task.status.is_final() {
            return;
        }
        match self.store.dependents(task.id).await {
            Ok(dependents) => {
                for dependent in dependents {
                    self.announce_ready(&dependent);
                    self.publish(dependent);
                }
            }
            Err(error) => {
                warn!(task_id = %task.id, %error, "cannot read the tasks that depend on a task; the periodic look finds them");
            }
        }
    }

    /// Returns one task.
    pub async fn get(&self, id: Uuid) -> Result<Task, TaskError> {
        Ok(Arc::unwrap_or_clone(self.get_shared(id).await?))
    }

    async fn get_shared(&self, id: Uuid) -> Result<Arc<Task>, TaskError> {
        if let Some(task) = self.finished.get(&id) {
            return Ok(task);
        }
        let task = Arc::new(self.store.get(id).await?.ok_or(TaskError::NotFound(id))?);
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

    /// Queues a failed or cancelled task again with a fresh attempt budget; any other status
    /// is refused.
    pub async fn retry(&self, id: Uuid) -> Result<Task, TaskError> {
        match self.store.retry(id, self.now_millis()).await? {
            Some(task) => Ok(self.publish_returned(task)),
            None => match self.get(id).await?.status {
                TaskStatus::Failed | TaskStatus::Cancelled => Err(TaskError::RetryBlocked(id)),
                status => Err(TaskError::WrongStatus { id, status }),
            },
        }
    }

    /// Returns a page of a task's attempts, oldest first, and how many it made.
    pub async fn attempts(&self, id: Uuid, page: Page) -> Result<(Vec<Attempt>, u64), TaskError> {
        self.get_shared(id).await?;
        Ok(self.store.attempts(id, page).await?)
    }

    /// Queues the scheduled tasks that are due, then learns when the next one is.
    async fn queue_due(&self) -> Result<(), TaskError> {
        loop {
            let now = self.now_millis();
            let queued = self.store.queue_due(now, SWEEP_BATCH).await?;
            for task in &queued {
                debug!(task_id = %task.id, "scheduled task queued");
                self.publish_returned(task.clone());
            }
            if queued.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        let next = self.store.next_due().await?.unwrap_or(i64::MAX);
        self.next_due.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// Queues the scheduled tasks that are due, when this process knows of one, so a claim
    /// sees them.
    async fn queue_due_before_claiming(&self) -> Result<(), TaskError> {
        if self.something_due() {
            self.queue_due().await?;
        }
        Ok(())
    }

    /// Tells whether a scheduled task is due by now, as far as this process knows.
    fn something_due(&self) -> bool {
        self.next_due.load(Ordering::SeqCst) <= self.now_millis()
    }

    /// How long until the next scheduled task this process knows of is due.
    fn until_next_due(&self) -> Duration {
        let millis = self
            .next_due
            .load(Ordering::SeqCst)
            .saturating_sub(self.now_millis());
        Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }

    /// Cancels a scheduled, queued or active task; a final one is refused.
    pub async fn cancel(&self, id: Uuid) -> Result<Task, TaskError> {
        match self.store.cancel(id, self.now_millis()).await? {
            Some(task) => {
                self.settle_dependents(&task).await;
                Ok(self.publish(task))
            }
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
    /// work when none is ready. A waiting claim runs no statement until work it can take is
    /// announced to it (each new task is announced to one waiting claim); it returns an empty
    /// list when the wait ends without work.
    pub async fn claim(&self, claim: Claim) -> Result<Vec<Task>, TaskError> {
        check_claim_size(claim.max_tasks)?;
        let deadline = Instant::now() + claim.wait.min(MAX_CLAIM_WAIT);
        let mut woken_for = None;
        loop {
            self.queue_due_before_claiming().await?;
            // Enlist before looking, so work announced meanwhile is not missed.
            let mut wait = self.waiters.enlist(claim.agent_id, &claim.capabilities);
            let tasks = self.store.claim(&claim, self.now_millis()).await?;
            if !tasks.is_empty() {
                self.record_claimed(claim.agent_id, &tasks);
                return Ok(tasks);
            }
            if let Some(work) = woken_for.take() {
                self.pass_on_if_full(&claim, &work).await?;
            }
            tokio::select! {
                work = wait.woken() => woken_for = work,
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Claims up to `claim.max_tasks` tasks without waiting. Claims of one agent that arrive
    /// together share one statement (see [`Claims`]), so the slots an agent's finished tasks
    /// freed are refilled at the cost of one claim.
    pub async fn claim_now(&self, claim: Claim) -> Result<Vec<Task>, TaskError> {
        check_claim_size(claim.max_tasks)?;
        self.queue_due_before_claiming().await?;
        let agent_id = claim.agent_id;
        let lane = usize::from(agent_id.as_bytes()[15]) % self.claims.len();
        let tasks = self.claims[lane].write(claim).await??;
        self.record_claimed(agent_id, &tasks);
        Ok(tasks)
    }

    fn record_claimed(&self, agent_id: Uuid, tasks: &[Task]) {
        let claimed_at = self.now_millis();
        for task in tasks {
            let waited = u64::try_from(claimed_at - task.available_at).unwrap_or(0);
            if let Some(registry) = Registry::current() {
                registry
                    .histogram(&names::TASK_QUEUE_WAIT, &[])
                    .observe(Duration::from_millis(waited));
            }
            debug!(task_id = %task.id, %agent_id, attempt = task.attempts, "task claimed");
            self.publish(task.clone());
        }
    }

    /// Hands `work`, announced to a claim that found nothing, to another waiting claim when
    /// this one's agent has no free slot (rather than another claim having taken the work).
    async fn pass_on_if_full(&self, claim: &Claim, work: &ReadyWork) -> Result<(), TaskError> {
        let held = self.store.count_active(&[claim.agent_id]).await?;
        let held = held.first().map_or(0, |(_, count)| *count);
        if held >= i64::from(claim.max_concurrency) {
            self.waiters.wake_one(work, Some(claim.agent_id));
        }
        Ok(())
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
            .requeue_agent_tasks(agent_id, reason, self.now_millis())
            .await?;
        for task in &tasks {
            let _span = task_span("task.taken_back", task).entered();
            warn!(task_id = %task.id, %agent_id, reason, status = %task.status, "task taken back from agent");
            self.publish_returned(task.clone());
        }
        Ok(tasks.len())
    }

    /// Squares what an agent says it holds (`listed`, from its heartbeat) with what the queue
    /// says it holds: renews the leases of the listed tasks; takes back each task it was handed
    /// more than [`CLAIM_ANSWER_GRACE`] ago but does not list (the answer to its claim was
    /// lost), which counts as a lost attempt; and names the listed tasks it no longer holds
    /// (cancelled, timed out or taken back), which the agent should stop working on.
    pub async fn sync_held(&self, agent_id: Uuid, listed: &[Uuid]) -> Result<HeldSync, TaskError> {
        if listed.len() > MAX_LISTED_HELD {
            return Err(TaskError::Invalid(format!(
                "an agent may list at most {MAX_LISTED_HELD} held tasks"
            )));
        }
        let now = self.now_millis();
        let grace = i64::try_from(CLAIM_ANSWER_GRACE.as_millis()).unwrap_or(i64::MAX / 2);
        let (released, cancelled) = self
            .store
            .sync_held(agent_id, listed, now - grace, NOT_HELD, now)
            .await?;
        for task in &released {
            let _span = task_span("task.taken_back", task).entered();
            warn!(task_id = %task.id, %agent_id, status = %task.status, "task taken back: its agent does not hold it");
            self.publish_returned(task.clone());
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
            .progress(id, &lease, percent, message.as_deref(), self.now_millis())
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
            .completions
            .write(Completion {
                id,
                lease,
                result: result.clone(),
            })
            .await?;
        match updated {
            Some(task) => {
                self.settle_dependents(&task).await;
                Ok(self.publish(task))
            }
            None => answer_repeat(self.get(id).await?, lease, |task| {
                task.result.as_deref() == Some(result.as_str())
            }),
        }
    }

    /// Ends the attempt `lease` names of task `id` as `ending` says: completes it
    /// ([`TaskQueue::complete`]) or fails it ([`TaskQueue::fail`]).
    pub async fn finish(
        &self,
        id: Uuid,
        lease: LeaseRef,
        ending: Ending,
    ) -> Result<Task, TaskError> {
        match ending {
            Ending::Completed { result } => self.complete(id, lease, result).await,
            Ending::Failed { error, retryable } => self.fail(id, lease, error, retryable).await,
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
        let now = self.now_millis();
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
            Some(task) => {
                self.settle_dependents(&task).await;
                Ok(self.publish_returned(task))
            }
            // The attempt ended between our read and our write (expired, cancelled, or a
            // repeat of this very report that won the race).
            None => answer_repeat(self.get(id).await?, lease, same_error),
        }
    }

    /// Streams a task's states: the current one first, then each change, ending after a final
    /// status, when the receiver is dropped or leaves a state unread too long, or at shutdown.
    /// Watchers of one task share its states; a watcher that reads slowly skips to the newest.
    /// Changes made by other replicas arrive through the queue's periodic re-read.
    pub async fn watch(
        self: &Arc<Self>,
        id: Uuid,
    ) -> Result<mpsc::Receiver<Result<Arc<Task>, TaskError>>, TaskError> {
        let current = self.get_shared(id).await?;
        let mut watch = self
            .watchers
            .watch(current)
            .map_err(|full| TaskError::TooManyWatchers { limit: full.limit })?;
        let (sender, receiver) = mpsc::channel(1);
        let shutdown = self.shutdown.clone();
        let slow_watcher_limit = self.settings.slow_watcher_limit;
        tokio::spawn(async move {
            loop {
                let seen = tokio::select! {
                    seen = watch.next() => seen,
                    () = sender.closed() => return,
                    () = shutdown.cancelled() => return,
                };
                let (state, last) = match seen {
                    None => return,
                    Some(Seen::Gone) => (Err(TaskError::NotFound(id)), true),
                    Some(Seen::Task(task)) => {
                        let last = task.status.is_final();
                        (Ok(task), last)
                    }
                };
                match sender.send_timeout(state, slow_watcher_limit).await {
                    Ok(()) if !last => {}
                    Ok(()) | Err(SendTimeoutError::Closed(_)) => return,
                    Err(SendTimeoutError::Timeout(_)) => {
                        debug!(task_id = %id, "watcher reads too slowly; ending its watch");
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }

    /// Tells how many watchers there are.
    pub fn watcher_count(&self) -> usize {
        self.watchers.count()
    }

    /// Adds a message to a task's conversation.
    pub async fn add_message(&self, message: NewMessage) -> Result<Message, TaskError> {
        let message = message.validated()?;
        self.store
            .add_message(&message, self.now_millis())
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
                .requeue_expired(self.now_millis(), SWEEP_BATCH)
                .await?;
            for task in &tasks {
                let _span = task_span("task.lease_expired", task).entered();
                warn!(task_id = %task.id, attempts = task.attempts, status = %task.status, "lease expired");
                self.publish_returned(task.clone());
            }
            ended += tasks.len();
            if tasks.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        Ok(ended)
    }

    /// Deletes final tasks that finished more than `retention` ago, [`PRUNE_BATCH`] at a time
    /// with a pause between batches, so writers never wait long behind a large prune (SQLite
    /// has one writer). Returns how many.
    pub async fn prune_finished(&self, retention: Duration) -> Result<u64, TaskError> {
        let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let before = self.now_millis() - age;
        let mut pruned = 0;
        loop {
            let batch = self.store.prune_finished(before, PRUNE_BATCH).await?;
            pruned += batch;
            if batch > 0 {
                self.finished.invalidate_all();
            }
            if batch < u64::from(PRUNE_BATCH) || self.shutdown.is_cancelled() {
                return Ok(pruned);
            }
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
    }

    /// Compacts the kept task counts behind list totals and [`TaskQueue::count_by_status`].
    pub async fn fold_counts(&self) -> Result<(), TaskError> {
        Ok(self.store.fold_counts().await?)
    }

    /// Asks for a look at ready work soon, for task `id` that became claimable in another
    /// process (a PostgreSQL notification); tasks announced here already are left to the
    /// periodic look.
    pub fn nudge(&self, id: Uuid) {
        if !self.announced.contains_key(&id) {
            self.nudged.notify_one();
        }
    }

    /// Hands a task's new state to its watchers and hands the task back.
    fn publish(&self, task: Task) -> Task {
        let task = Arc::new(task);
        self.remember_if_finished(&task);
        self.watchers.publish(&task);
        Arc::unwrap_or_clone(task)
    }

    /// Publishes a task that an ended attempt returned, announcing it when it is claimable now.
    fn publish_returned(&self, task: Task) -> Task {
        if task.status == TaskStatus::Queued && task.available_at <= self.now_millis() {
            self.announce(&ReadyWork::of(&task));
        }
        self.publish(task)
    }

    /// Keeps a completed task in memory: it never changes again (a failed or cancelled one may
    /// be retried, on any replica).
    fn remember_if_finished(&self, task: &Arc<Task>) {
        if task.status == TaskStatus::Completed {
            self.finished.insert(task.id, Arc::clone(task));
        }
    }

    /// Wakes the one waiting claim that should take `work`, once per task.
    fn announce(&self, work: &ReadyWork) {
        if self.announced.get(&work.id) == Some(work.available_at) {
            return;
        }
        self.announced.insert(work.id, work.available_at);
        self.waiters.wake_one(work, None);
    }

    /// Hands watchers the tasks that changed since the versions they have `seen`, or that are
    /// gone: first reads the tasks' versions, then only the tasks that changed.
    async fn reread_changed(&self, seen: &[TaskVersion]) -> Result<(), TaskError> {
        let ids: Vec<Uuid> = seen.iter().map(|version| version.id).collect();
        let current: HashMap<Uuid, TaskVersion> = self
            .store
            .versions(&ids)
            .await?
            .into_iter()
            .map(|version| (version.id, version))
            .collect();
        let mut changed = Vec::new();
        for version in seen {
            match current.get(&version.id) {
                Some(now) if now != version => changed.push(version.id),
                Some(_) => {}
                None => self.watchers.gone(version.id),
            }
        }
        for task in self.store.get_many(&changed).await? {
            let task = Arc::new(task);
            self.remember_if_finished(&task);
            self.watchers.publish(&task);
        }
        Ok(())
    }

    /// Looks at what no wake-up announced: re-reads the unfinished watched tasks (changed by
    /// other replicas) and, while claims wait, announces tasks that became ready since the
    /// last look. `window_start` is where the last look ended; `None` before the first.
    async fn look_again(&self, window_start: &mut Option<i64>) {
        for seen in self.watchers.unfinished().chunks(REREAD_BATCH) {
            if let Err(error) = self.reread_changed(seen).await {
                debug!(%error, "cannot re-read watched tasks");
            }
        }
        if self.waiters.is_empty() {
            *window_start = None;
            return;
        }
        let now = self.now_millis();
        let after = window_start.unwrap_or(now) - READY_SLACK_MILLIS;
        match self.store.ready_between(after, now, READY_BATCH).await {
            Ok(ready) => {
                let next_start = match ready.last() {
                    Some(last) if ready.len() == READY_BATCH as usize => {
                        last.available_at - 1 + READY_SLACK_MILLIS
                    }
                    _ => now,
                };
                for work in &ready {
                    self.announce(work);
                }
                *window_start = Some(next_start);
            }
            Err(error) => debug!(%error, "cannot look for ready tasks"),
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

/// Looks again every poll interval, or soon after a nudge, for as long as the queue exists
/// and runs; queues scheduled tasks when the next one is due, and at every interval (another
/// replica may have scheduled one sooner).
async fn keep_looking(queue: Weak<TaskQueue>) {
    let mut window_start = None;
    let mut due_checked = Instant::now();
    loop {
        let Some(queue) = queue.upgrade() else { return };
        if queue.something_due() || due_checked.elapsed() >= queue.settings.poll_interval {
            due_checked = Instant::now();
            if let Err(error) = queue.queue_due().await {
                debug!(%error, "cannot queue due tasks");
            }
        }
        queue.look_again(&mut window_start).await;
        let wait = queue.settings.poll_interval.min(queue.until_next_due());
        tokio::select! {
            () = queue.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = queue.nudged.notified() => tokio::time::sleep(NUDGE_DEBOUNCE).await,
        }
    }
}

/// What inserting tasks did, once their dependencies were found fit.
enum Inserted {
    Created(Vec<Task>),
    Existing(Box<Task>),
}

/// Turns a dependency storage could not use into the error that explains it.
fn dependencies_met(insertion: Insertion) -> Result<Inserted, TaskError> {
    match insertion {
        Insertion::Created(tasks) => Ok(Inserted::Created(tasks)),
        Insertion::Existing(task) => Ok(Inserted::Existing(task)),
        Insertion::MissingDependency(id) => Err(missing_dependency(id)),
        Insertion::EndedDependency(id, status) => Err(TaskError::DependencyEnded { id, status }),
    }
}

/// Refuses a batch whose dependencies, all together, would not fit in the statements that
/// record them.
fn check_edges(tasks: &[NewTask]) -> Result<(), TaskError> {
    let edges: usize = tasks.iter().map(NewTask::dependency_count).sum();
    if edges > MAX_BATCH_DEPENDENCIES {
        return Err(TaskError::Invalid(format!(
            "a batch records at most {MAX_BATCH_DEPENDENCIES} dependencies; this one has {edges}"
        )));
    }
    Ok(())
}

fn missing_dependency(id: Uuid) -> TaskError {
    TaskError::Invalid(format!("depends_on names task {id}, which does not exist"))
}

/// Refuses a claim for fewer than one or more than [`MAX_CLAIM`] tasks.
fn check_claim_size(max_tasks: u32) -> Result<(), TaskError> {
    if (1..=MAX_CLAIM).contains(&max_tasks) {
        Ok(())
    } else {
        Err(TaskError::Invalid(format!(
            "max_tasks must be between 1 and {MAX_CLAIM}"
        )))
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

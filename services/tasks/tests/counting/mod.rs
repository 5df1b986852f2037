//! Task storage that counts the claim statements and the shared creates run through it, so
//! tests can tell how much work waiting claims cost and whether creates share transactions;
//! it can also be told to refuse shared creates, as a database might.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use swarm_kit::StoreError;
use swarm_kit::page::Page;
use swarm_tasks::domain::{
    Attempt, Claim, Completion, LeaseRef, Message, MessageScope, NewMessage, NewTask, ReadyWork,
    Schedule, Task, TaskFilter, Workflow, WorkflowFilter, WorkflowGraph,
};
use swarm_tasks::storage::{Insertion, Release, TaskStore, TaskVersion, WorkflowRecord};
use uuid::Uuid;

/// Wraps a store and counts its claims and shared creates.
pub struct CountingStore {
    inner: Arc<dyn TaskStore>,
    claims: AtomicUsize,
    shared_creates: AtomicUsize,
    refuse_shared_creates: AtomicBool,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn TaskStore>) -> Self {
        Self {
            inner,
            claims: AtomicUsize::new(0),
            shared_creates: AtomicUsize::new(0),
            refuse_shared_creates: AtomicBool::new(false),
        }
    }

    /// How many statements stored more than one task.
    pub fn shared_creates(&self) -> usize {
        self.shared_creates.load(Ordering::SeqCst)
    }

    /// Makes every statement that would store more than one task fail from now on.
    pub fn refuse_shared_creates(&self) {
        self.refuse_shared_creates.store(true, Ordering::SeqCst);
    }

    /// How many claim statements ran.
    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TaskStore for CountingStore {
    async fn insert(
        &self,
        task: &NewTask,
        fingerprint: Option<&str>,
        now: i64,
    ) -> Result<Insertion, StoreError> {
        self.inner.insert(task, fingerprint, now).await
    }

    async fn insert_many(&self, tasks: &[NewTask], now: i64) -> Result<Insertion, StoreError> {
        if tasks.len() > 1 {
            if self.refuse_shared_creates.load(Ordering::SeqCst) {
                return Err(StoreError::Refused("shared creates refused".to_owned()));
            }
            self.shared_creates.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.insert_many(tasks, now).await
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
        self.inner.insert_workflow(workflow, tasks, now).await
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
        self.inner.cancel_workflow(id, now).await
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
        self.inner.get(id).await
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
        self.inner.cancel(id, now).await
    }

    async fn retry(&self, id: Uuid, now: i64) -> Result<Option<Task>, StoreError> {
        self.inner.retry(id, now).await
    }

    async fn queue_due(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        self.inner.queue_due(now, limit).await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.inner.next_due().await
    }

    async fn attempts(&self, task_id: Uuid, page: Page) -> Result<(Vec<Attempt>, u64), StoreError> {
        self.inner.attempts(task_id, page).await
    }

    async fn claim(&self, claim: &Claim, now: i64) -> Result<Vec<Task>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(claim, now).await
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
        self.inner.requeue_agent_tasks(agent_id, error, now).await
    }

    async fn sync_held(
        &self,
        agent_id: Uuid,
        listed: &[Uuid],
        claimed_before: i64,
        error: &str,
        now: i64,
    ) -> Result<(Vec<Task>, Vec<Uuid>), StoreError> {
        self.inner
            .sync_held(agent_id, listed, claimed_before, error, now)
            .await
    }

    async fn progress(
        &self,
        id: Uuid,
        lease: &LeaseRef,
        percent: i32,
        message: Option<&str>,
        now: i64,
    ) -> Result<Option<Task>, StoreError> {
        self.inner.progress(id, lease, percent, message, now).await
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
        now: i64,
    ) -> Result<Vec<Task>, StoreError> {
        self.inner.complete_many(completions, now).await
    }

    async fn release(
        &self,
        id: Uuid,
        lease_id: Uuid,
        release: &Release,
        now: i64,
    ) -> Result<Option<Task>, StoreError> {
        self.inner.release(id, lease_id, release, now).await
    }

    async fn requeue_expired(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        self.inner.requeue_expired(now, limit).await
    }

    async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_finished(before, limit).await
    }

    async fn add_message(
        &self,
        message: &NewMessage,
        now: i64,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.add_message(message, now).await
    }

    async fn list_messages(
        &self,
        scope: &MessageScope,
        page: Page,
    ) -> Result<(Vec<Message>, u64), StoreError> {
        self.inner.list_messages(scope, page).await
    }
}

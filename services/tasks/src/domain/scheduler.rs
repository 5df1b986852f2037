//! The scheduler: keeps cron schedules and fires their due ticks. Every tasks replica runs it,
//! each waking when the next tick is due; for each due tick they race to create its task, and
//! the unique (schedule, tick) of tasks lets one win. The winner, or any replica after it,
//! moves the schedule on from that tick only, so a tick fires once however many replicas run,
//! and ticks missed while none ran fire once when one returns.

use std::sync::Arc;
use std::time::Duration;

use swarm_kit::StoreError;
use swarm_kit::page::Page;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::schedule::{CronSchedule, NewSchedule, Schedule, ScheduleUpdate};
use super::{NewTask, TaskQueue};
use crate::error::TaskError;
use crate::storage::TaskStore;

/// The longest the scheduler sleeps: schedules other replicas add or change are seen within it.
const LONGEST_SLEEP: Duration = Duration::from_secs(1);
/// The shortest: a schedule that stays due (one that cannot fire) is not tried in a busy loop.
const SHORTEST_SLEEP: Duration = Duration::from_millis(50);
/// The most due schedules one pass fires.
const FIRE_BATCH: u32 = 100;
/// The next tick of a schedule that has none (a date that never comes).
const NEVER: i64 = i64::MAX;

/// The schedules of one tasks replica.
pub struct Scheduler {
    queue: Arc<TaskQueue>,
    store: Arc<dyn TaskStore>,
    /// Wakes the firing loop when a schedule here changed its next tick.
    changed: Notify,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Builds a scheduler that creates its tasks through `queue`.
    pub fn new(queue: Arc<TaskQueue>, store: Arc<dyn TaskStore>) -> Arc<Self> {
        Arc::new(Self {
            queue,
            store,
            changed: Notify::new(),
        })
    }

    /// Creates a schedule; its first tick is the first after now. A taken name is refused.
    pub async fn create(&self, schedule: NewSchedule) -> Result<Schedule, TaskError> {
        let (schedule, cron, template) = schedule.validated()?;
        let now = self.queue.now_millis();
        let record = Schedule {
            id: Uuid::now_v7(),
            name: schedule.name,
            cron: schedule.cron,
            timezone: schedule.timezone,
            user_id: schedule.task.user_id.clone(),
            task: template,
            paused: schedule.paused,
            next_run_at: cron.next_after(now).unwrap_or(NEVER),
            last_run_at: None,
            created_at: now,
            updated_at: now,
        };
        let stored = self
            .store
            .insert_schedule(&record)
            .await
            .map_err(|error| name_taken(error, &record.name))?;
        self.changed.notify_one();
        Ok(stored)
    }

    /// Returns a schedule.
    pub async fn get(&self, id: Uuid) -> Result<Schedule, TaskError> {
        self.store
            .schedule(id)
            .await?
            .ok_or(TaskError::ScheduleNotFound(id))
    }

    /// Returns a page of schedules (of `user_id`, when given), newest first, and how many.
    pub async fn list(
        &self,
        user_id: Option<&str>,
        page: Page,
    ) -> Result<(Vec<Schedule>, u64), TaskError> {
        Ok(self.store.list_schedules(user_id, page).await?)
    }

    /// Changes a schedule. A new expression or zone, or a resumption, starts again from the
    /// first tick after now; ticks that passed while paused do not fire.
    pub async fn update(&self, id: Uuid, update: ScheduleUpdate) -> Result<Schedule, TaskError> {
        let current = self.get(id).await?;
        let resumed = current.paused && update.paused == Some(false);
        let retimed = update.cron.is_some() || update.timezone.is_some();
        let task = update
            .task
            .unwrap_or_else(|| current.task.task(current.user_id.clone()));
        let (changed, cron, template) = NewSchedule {
            name: update.name.unwrap_or(current.name),
            cron: update.cron.unwrap_or(current.cron),
            timezone: update.timezone.unwrap_or(current.timezone),
            task: NewTask {
                user_id: current.user_id.clone(),
                ..task
            },
            paused: update.paused.unwrap_or(current.paused),
        }
        .validated()?;
        let now = self.queue.now_millis();
        let next_run_at = if resumed || retimed {
            cron.next_after(now).unwrap_or(NEVER)
        } else {
            current.next_run_at
        };
        let record = Schedule {
            name: changed.name,
            cron: changed.cron,
            timezone: changed.timezone,
            task: template,
            paused: changed.paused,
            next_run_at,
            updated_at: now,
            ..current
        };
        let stored = self
            .store
            .update_schedule(&record)
            .await
            .map_err(|error| name_taken(error, &record.name))?
            .ok_or(TaskError::ScheduleNotFound(id))?;
        self.changed.notify_one();
        Ok(stored)
    }

    /// Deletes a schedule; the tasks it created stay.
    pub async fn delete(&self, id: Uuid) -> Result<(), TaskError> {
        if self.store.delete_schedule(id).await? {
            Ok(())
        } else {
            Err(TaskError::ScheduleNotFound(id))
        }
    }

    /// Fires every due tick: creates its task (unless another replica did) and moves its
    /// schedule on. Returns how many tasks this replica created.
    pub async fn fire_due(&self) -> Result<usize, TaskError> {
        let mut created = 0;
        loop {
            let now = self.queue.now_millis();
            let due = self.store.due_schedules(now, FIRE_BATCH).await?;
            for schedule in &due {
                // One schedule that cannot fire does not hold the others back.
                match self.fire(schedule, now).await {
                    Ok(fired) => created += usize::from(fired),
                    Err(error) => {
                        warn!(schedule_id = %schedule.id, %error, "schedule did not fire")
                    }
                }
            }
            if due.len() < FIRE_BATCH as usize {
                return Ok(created);
            }
        }
    }

    /// Fires `schedule`'s due tick; tells whether this replica created its task.
    async fn fire(&self, schedule: &Schedule, now: i64) -> Result<bool, TaskError> {
        let tick = schedule.next_run_at;
        let next = match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron.after_firing(tick, now).unwrap_or(NEVER),
            Err(error) => {
                warn!(schedule_id = %schedule.id, %error, "schedule cannot be read; it stops");
                NEVER
            }
        };
        let task = NewTask {
            schedule_tick: Some((schedule.id, tick)),
            ..schedule.task.task(schedule.user_id.clone())
        };
        let created = self.queue.create_for_tick(task).await?;
        if let Some(task) = &created {
            debug!(schedule_id = %schedule.id, task_id = %task.id, tick, "schedule fired");
        }
        self.store
            .advance_schedule(schedule.id, tick, next, now)
            .await?;
        Ok(created.is_some())
    }

    /// Fires due ticks as they come, until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(error) = self.fire_due().await {
                warn!(%error, "cannot fire due schedules");
            }
            let wait = match self.store.next_schedule_due().await {
                Ok(Some(next)) => {
                    let millis = next.saturating_sub(self.queue.now_millis()).max(0);
                    Duration::from_millis(millis.unsigned_abs())
                        .clamp(SHORTEST_SLEEP, LONGEST_SLEEP)
                }
                Ok(None) => LONGEST_SLEEP,
                Err(error) => {
                    debug!(%error, "cannot tell when the next schedule is due");
                    LONGEST_SLEEP
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Turns a unique violation on the schedule's name into the refusal that explains it.
fn name_taken(error: StoreError, name: &str) -> TaskError {
    match error {
        StoreError::Conflict(_) => TaskError::ScheduleNameTaken(name.to_owned()),
        other => TaskError::Storage(other),
    }
}

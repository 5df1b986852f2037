//! Tasks: their states, what a valid new task is, the filters a list accepts and what a claim
//! and a lease reference carry.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use swarm_kit::validate::{MAX_CAPABILITIES, check_name, check_text, name_set};

use super::IdempotencyKey;
use crate::error::TaskError;

/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// The largest payload or result, in bytes of JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The longest error text kept, in characters.
pub const MAX_ERROR_CHARS: usize = 4096;
/// The longest timeout, in seconds (one day).
pub const MAX_TIMEOUT_SECONDS: i32 = 86_400;

/// The longest bound on one attempt's run time: a week.
pub const MAX_EXECUTION_TIMEOUT_SECONDS: i32 = 604_800;
/// The most tasks one claim may take.
pub const MAX_CLAIM: u32 = 100;
/// The longest delay a task may be submitted with, in seconds (a year).
pub const MAX_DELAY_SECONDS: u32 = 31_536_000;
/// The latest start a task may be given: the end of the year 9999, in Unix milliseconds.
pub const LATEST_RUN_AT: i64 = 253_402_300_799_999;
/// The most bytes of parents' results one claim hands down: past it, the rest are left out
/// (an agent reads them with the task), so the answer stays within the message limit.
pub const MAX_HANDED_DOWN_BYTES: usize = 4 * 1024 * 1024;
/// The most tasks one task may depend on.
pub const MAX_DEPENDENCIES: usize = 100;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting for the tasks it depends on to complete.
    Waiting,
    /// Waiting for its time before it is queued.
    Scheduled,
    /// Waiting to be claimed.
    Queued,
    /// Held by an agent under a lease.
    Active,
    /// Finished with a result.
    Completed,
    /// Finished with an error and no attempts left.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in the order of a task's life.
    pub const ALL: [Self; 7] = [
        Self::Waiting,
        Self::Scheduled,
        Self::Queued,
        Self::Active,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Returns the lowercase name used in storage and in the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Tells whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "waiting" => Ok(Self::Waiting),
            "scheduled" => Ok(Self::Scheduled),
            "queued" => Ok(Self::Queued),
            "active" => Ok(Self::Active),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(TaskError::Invalid(format!("unknown task status {other:?}"))),
        }
    }
}

/// A task as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task id (a UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// A short human title.
    pub title: String,
    /// What sort of work this is.
    pub kind: String,
    /// The input, as JSON text.
    pub payload: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// 0 to 9; higher is claimed first.
    pub priority: i32,
    /// Capabilities a claiming agent must all have.
    pub required_capabilities: Vec<String>,
    /// The holder while active; otherwise the pinned agent, or the last holder once final.
    pub agent_id: Option<Uuid>,
    /// The agent the task is pinned to.
    pub pinned_agent_id: Option<Uuid>,
    /// On whose behalf it was submitted.
    pub user_id: Option<String>,
    /// Attempts started so far.
    pub attempts: i32,
    /// The most attempts allowed.
    pub max_attempts: i32,
    /// Seconds an attempt may go without progress before its lease expires.
    pub timeout_seconds: i32,
    /// Seconds one attempt may run in all, renewals or not.
    pub execution_timeout_seconds: Option<i32>,
    /// Latest progress, 0 to 100.
    pub progress_percent: i32,
    /// Latest progress note.
    pub progress_message: Option<String>,
    /// The result as JSON text, once completed.
    pub result: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// The lease of the current attempt while active; once its holder reported it completed
    /// or failed, the lease of that attempt (so a repeated report is recognised). Cleared when
    /// the attempt is taken back or the task cancelled.
    pub lease_id: Option<Uuid>,
    /// When the current lease expires, while active.
    pub lease_expires_at: Option<i64>,
    /// The earliest time the task may be claimed: when a scheduled task is queued, or when a
    /// failed attempt's backoff ends.
    pub available_at: i64,
    /// The idempotency key as stored, tenant included ([`IdempotencyKey::storage_key`]).
    pub idempotency_key: Option<String>,
    /// The fingerprint of the request that created it, when it came with an idempotency key.
    pub request_hash: Option<String>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
    /// When the current or last attempt started.
    pub started_at: Option<i64>,
    /// When it reached a final status.
    pub finished_at: Option<i64>,
    /// The W3C `traceparent` of the request that created it, for background work to link to.
    pub trace_parent: Option<String>,
    /// How many tasks it depends on.
    pub dependency_count: i32,
    /// How many tasks depend on it.
    pub dependent_count: i32,
    /// The workflow it is part of.
    pub workflow_id: Option<Uuid>,
    /// Its key in that workflow.
    pub workflow_key: Option<String>,
    /// The schedule that created it.
    pub schedule_id: Option<Uuid>,
    /// The tick of that schedule (Unix milliseconds) that created it.
    pub schedule_tick: Option<i64>,
    /// The results of the tasks it depends on (JSON text), handed to an agent that claims it.
    pub dependency_results: Vec<(Uuid, Option<String>)>,
}

/// What a task held in memory costs besides its text, in bytes.
const TASK_OVERHEAD_BYTES: usize = 512;

impl Task {
    /// Tells what the task costs held in memory, in bytes.
    pub(crate) fn weight(&self) -> u32 {
        let text = [
            self.title.len(),
            self.kind.len(),
            self.payload.len(),
            self.result.as_ref().map_or(0, String::len),
            self.error.as_ref().map_or(0, String::len),
            self.progress_message.as_ref().map_or(0, String::len),
            self.user_id.as_ref().map_or(0, String::len),
            self.idempotency_key.as_ref().map_or(0, String::len),
            self.trace_parent.as_ref().map_or(0, String::len),
            self.required_capabilities.iter().map(String::len).sum(),
        ];
        u32::try_from(TASK_OVERHEAD_BYTES + text.iter().sum::<usize>()).unwrap_or(u32::MAX)
    }
}

/// What a client asks for when it submits a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Required, 1 to 256 characters.
    pub title: String,
    /// Empty means "default".
    pub kind: String,
    /// JSON text; empty means null.
    pub payload: String,
    /// 0 to 9.
    pub priority: i32,
    /// Capabilities a claiming agent must all have.
    pub required_capabilities: Vec<String>,
    /// Pins the task to one agent.
    pub pinned_agent_id: Option<Uuid>,
    /// On whose behalf it is submitted.
    pub user_id: Option<String>,
    /// 1 to 100.
    pub max_attempts: i32,
    /// 1 to 86400.
    pub timeout_seconds: i32,
    /// 1 to 604800: how long one attempt may run in all.
    pub execution_timeout_seconds: Option<i32>,
    /// A key that makes a repeated submission (of the same tenant) return the first task.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The W3C `traceparent` of the request that creates it.
    pub trace_parent: Option<String>,
    /// When it may start (Unix milliseconds); until then it is scheduled.
    pub run_at: Option<i64>,
    /// Seconds from submission until it may start, 1 to a year; not with `run_at`.
    pub delay_seconds: Option<u32>,
    /// Existing tasks it waits for (at most 100 with `after`): it is queued once they all
    /// completed, and cancelled if one fails or is cancelled.
    pub depends_on: Vec<Uuid>,
    /// Tasks created in the same batch it waits for, by their index in the batch.
    pub after: Vec<usize>,
    /// The client tenant that submits it, if a client does: the tasks it depends on must be
    /// that tenant's.
    pub tenant: Option<String>,
    /// Its key in the workflow it is part of.
    pub workflow_key: Option<String>,
    /// The schedule and tick (Unix milliseconds) that create it: one task per tick.
    pub schedule_tick: Option<(Uuid, i64)>,
}

impl Default for NewTask {
    fn default() -> Self {
        Self {
            title: String::new(),
            kind: String::new(),
            payload: String::new(),
            priority: 0,
            required_capabilities: Vec::new(),
            pinned_agent_id: None,
            user_id: None,
            max_attempts: 3,
            timeout_seconds: 300,
            execution_timeout_seconds: None,
            idempotency_key: None,
            trace_parent: None,
            run_at: None,
            delay_seconds: None,
            depends_on: Vec::new(),
            after: Vec::new(),
            tenant: None,
            workflow_key: None,
            schedule_tick: None,
        }
    }
}

impl NewTask {
    /// Checks every rule of the API contract and fills defaults (kind "default", payload null,
    /// capabilities sorted and deduplicated).
    pub fn validated(mut self) -> Result<Self, TaskError> {
        let title_chars = self.title.chars().count();
        if self.title.trim().is_empty() || title_chars > MAX_TITLE_CHARS {
            return Err(TaskError::Invalid(format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        check_text("title", &self.title)?;
        if self.kind.is_empty() {
            "default".clone_into(&mut self.kind);
        }
        check_name("kind", &self.kind)?;
        self.payload = json_text("payload", std::mem::take(&mut self.payload))?;
        if !(0..=9).contains(&self.priority) {
            return Err(TaskError::Invalid(
                "priority must be between 0 and 9".into(),
            ));
        }
        self.required_capabilities = name_set(
            "capability",
            std::mem::take(&mut self.required_capabilities),
            MAX_CAPABILITIES,
        )?;
        if let Some(user_id) = &self.user_id {
            check_name("user_id", user_id)?;
        }
        if let Some(key) = &self.idempotency_key {
            check_name("idempotency key", &key.key)?;
            if !key.tenant.is_empty() {
                check_name("tenant", &key.tenant)?;
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(TaskError::Invalid(
                "max_attempts must be between 1 and 100".into(),
            ));
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Err(TaskError::Invalid(format!(
                "timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}"
            )));
        }
        if self
            .execution_timeout_seconds
            .is_some_and(|bound| !(1..=MAX_EXECUTION_TIMEOUT_SECONDS).contains(&bound))
        {
            return Err(TaskError::Invalid(format!(
                "execution_timeout_seconds must be between 1 and {MAX_EXECUTION_TIMEOUT_SECONDS}"
            )));
        }
        if self.run_at.is_some_and(|run_at| run_at > LATEST_RUN_AT) {
            return Err(TaskError::Invalid(
                "run_at must be before the year 10000".into(),
            ));
        }
        if self.run_at.is_some() && self.delay_seconds.is_some() {
            return Err(TaskError::Invalid(
                "give run_at or delay_seconds, not both".into(),
            ));
        }
        self.depends_on.sort_unstable();
        self.depends_on.dedup();
        self.after.sort_unstable();
        self.after.dedup();
        if self.depends_on.len() + self.after.len() > MAX_DEPENDENCIES {
            return Err(TaskError::Invalid(format!(
                "depends_on names at most {MAX_DEPENDENCIES} tasks"
            )));
        }
        if self
            .delay_seconds
            .is_some_and(|delay| !(1..=MAX_DELAY_SECONDS).contains(&delay))
        {
            return Err(TaskError::Invalid(format!(
                "delay_seconds must be between 1 and {MAX_DELAY_SECONDS}"
            )));
        }
        Ok(self)
    }

    /// Whether the task stands alone: it names no idempotency key (which must be looked up
    /// before it is stored) and depends on nothing. Such tasks are stored by one statement, and
    /// may share it with others.
    pub fn stands_alone(&self) -> bool {
        self.idempotency_key.is_none() && self.depends_on.is_empty() && self.after.is_empty()
    }

    /// How many tasks it depends on.
    pub fn dependency_count(&self) -> usize {
        self.depends_on.len() + self.after.len()
    }

    /// Returns the status the task, submitted at `now`, starts in once nothing it depends on
    /// is left to complete: scheduled when it may start only later, queued otherwise.
    pub fn initial_status(&self, now: i64) -> TaskStatus {
        if self.available_at(now) > now {
            TaskStatus::Scheduled
        } else {
            TaskStatus::Queued
        }
    }

    /// Returns when the task, submitted at `now`, may first be claimed.
    pub fn available_at(&self, now: i64) -> i64 {
        match (self.run_at, self.delay_seconds) {
            (Some(run_at), _) => run_at.max(now),
            (None, Some(delay)) => now + i64::from(delay) * 1000,
            (None, None) => now,
        }
    }
}

/// Checks that `text` is JSON of at most 1 MiB; empty text means `null`.
pub fn json_text(what: &str, text: String) -> Result<String, TaskError> {
    Ok(swarm_kit::validate::json_text(
        what,
        text,
        MAX_PAYLOAD_BYTES,
        "null",
    )?)
}

/// Filters of a task list; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only tasks held by or pinned to this agent.
    pub agent_id: Option<Uuid>,
    /// Only this user's tasks.
    pub user_id: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only tasks whose title contains this text, whatever the case of its (ASCII) letters.
    pub title_contains: Option<String>,
}

impl TaskFilter {
    /// Checks the free-text filters.
    pub fn check(&self) -> Result<(), TaskError> {
        let texts = [
            ("user_id", &self.user_id),
            ("kind", &self.kind),
            ("title_contains", &self.title_contains),
        ];
        for (what, value) in texts {
            if let Some(value) = value {
                check_text(what, value)?;
            }
        }
        Ok(())
    }
}

/// An agent's request for work, with what the registry says about the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming agent.
    pub agent_id: Uuid,
    /// What the agent can do.
    pub capabilities: Vec<String>,
    /// The most tasks the agent may hold at once, counting those it holds already.
    pub max_concurrency: u32,
    /// The most tasks to hand out, 1 to 100.
    pub max_tasks: u32,
    /// How long to wait for work when none is ready.
    pub wait: std::time::Duration,
}

/// A report that the attempt `lease` names completed task `id` with `result` (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The task.
    pub id: Uuid,
    /// The attempt that reports.
    pub lease: LeaseRef,
    /// What it produced.
    pub result: String,
}

/// How a held attempt ended, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It completed with a result (JSON text; empty means null).
    Completed {
        /// What it produced.
        result: String,
    },
    /// It failed.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

/// Names the attempt a report is about: the agent, and the lease when the agent has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef {
    /// The agent that claimed the task.
    pub agent_id: Uuid,
    /// The lease of the attempt; when given it must be the current one.
    pub lease_id: Option<Uuid>,
}

impl LeaseRef {
    /// Tells whether this reference names the current attempt of `task`.
    pub fn holds(&self, task: &Task) -> bool {
        task.status == TaskStatus::Active && self.names_attempt_of(task)
    }

    /// Tells whether this reference names the attempt whose own report left `task` as it is:
    /// its holder completed it, failed it for good, or (naming the lease, as the requeued task
    /// no longer names its last holder) failed it back to the queue.
    pub fn reported(&self, task: &Task) -> bool {
        match task.status {
            TaskStatus::Completed | TaskStatus::Failed => self.names_attempt_of(task),
            TaskStatus::Queued => self.lease_id.is_some() && task.lease_id == self.lease_id,
            TaskStatus::Waiting
            | TaskStatus::Scheduled
            | TaskStatus::Active
            | TaskStatus::Cancelled => false,
        }
    }

    fn names_attempt_of(&self, task: &Task) -> bool {
        task.agent_id == Some(self.agent_id)
            && self
                .lease_id
                .is_none_or(|lease| task.lease_id == Some(lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NewTask {
        NewTask {
            title: "hello".into(),
            ..NewTask::default()
        }
    }

    #[test]
    fn defaults_are_filled() {
        let task = valid().validated().unwrap();
        assert_eq!(task.kind, "default");
        assert_eq!(task.payload, "null");
        assert_eq!((task.max_attempts, task.timeout_seconds), (3, 300));
    }

    #[test]
    fn titles_are_bounded_in_characters_not_bytes() {
        let unicode = NewTask {
            title: "é".repeat(256),
            ..valid()
        };
        assert!(unicode.validated().is_ok());
        for title in ["", "   ", &"a".repeat(257)] {
            let task = NewTask {
                title: title.into(),
                ..valid()
            };
            assert!(
                matches!(task.validated(), Err(TaskError::Invalid(_))),
                "{title:?}"
            );
        }
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        for task in [
            NewTask {
                priority: 10,
                ..valid()
            },
            NewTask {
                priority: -1,
                ..valid()
            },
            NewTask {
                max_attempts: 0,
                ..valid()
            },
            NewTask {
                max_attempts: 101,
                ..valid()
            },
            NewTask {
                timeout_seconds: 0,
                ..valid()
            },
        ] {
            assert!(task.validated().is_err());
        }
    }

    #[test]
    fn payload_must_be_json_within_one_mebibyte() {
        let bad = NewTask {
            payload: "{nope".into(),
            ..valid()
        };
        assert!(bad.validated().is_err());
        let big = NewTask {
            payload: format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES)),
            ..valid()
        };
        assert!(big.validated().is_err());
        let ok = NewTask {
            payload: r#"{"a":[1,2]}"#.into(),
            ..valid()
        };
        assert_eq!(ok.validated().unwrap().payload, r#"{"a":[1,2]}"#);
    }

    #[test]
    fn capabilities_are_sorted_and_deduplicated() {
        let task = NewTask {
            required_capabilities: vec!["b".into(), "a".into(), "b".into()],
            ..valid()
        };
        assert_eq!(task.validated().unwrap().required_capabilities, ["a", "b"]);
        let empty = NewTask {
            required_capabilities: vec![String::new()],
            ..valid()
        };
        assert!(empty.validated().is_err());
    }

    #[test]
    fn a_start_is_a_time_or_a_delay_within_a_year() {
        let both = NewTask {
            run_at: Some(5_000),
            delay_seconds: Some(5),
            ..valid()
        };
        assert!(both.validated().is_err());
        for delay in [0, MAX_DELAY_SECONDS + 1] {
            let task = NewTask {
                delay_seconds: Some(delay),
                ..valid()
            };
            assert!(task.validated().is_err(), "{delay}");
        }
        let delayed = NewTask {
            delay_seconds: Some(2),
            ..valid()
        };
        assert_eq!(delayed.validated().unwrap().available_at(1_000), 3_000);
        let past = NewTask {
            run_at: Some(500),
            ..valid()
        };
        assert_eq!(past.available_at(1_000), 1_000, "a past time starts now");
        assert_eq!(valid().available_at(1_000), 1_000);
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), status);
        }
        assert!("running".parse::<TaskStatus>().is_err());
    }
}

//! Attempts: each claim of a task starts one, and whatever ends it (a report, an expired lease,
//! a lost agent, a cancellation) says how. The storage records them as the task moves.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::TaskError;

/// How an attempt ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Still under way.
    Running,
    /// Its agent completed the task.
    Completed,
    /// Its agent reported a failure.
    Failed,
    /// No progress came within the task's timeout.
    LeaseExpired,
    /// Its agent went offline, was deleted, or did not list the task in its heartbeats.
    AgentLost,
    /// The task was cancelled while the attempt ran.
    Cancelled,
    /// The attempt ran past the task's execution timeout.
    TimedOut,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [Self; 7] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::LeaseExpired,
        Self::AgentLost,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// Returns the lowercase name used in storage and in the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::LeaseExpired => "lease_expired",
            Self::AgentLost => "agent_lost",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptOutcome {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| TaskError::Invalid(format!("unknown attempt outcome {s:?}")))
    }
}

/// One attempt at a task, as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first, counting across retries.
    pub attempt: i32,
    /// The agent that made it.
    pub agent_id: Option<Uuid>,
    /// When it was claimed.
    pub started_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// How it ended, or `Running`.
    pub outcome: AttemptOutcome,
    /// The error it ended with.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_text() {
        for outcome in AttemptOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<AttemptOutcome>().unwrap(), outcome);
        }
        assert!("exploded".parse::<AttemptOutcome>().is_err());
    }
}

//! The tasks service's errors and how they map onto the shared error vocabulary.

use swarm_kit::Error;
use uuid::Uuid;

use crate::domain::{TaskStatus, WorkflowStatus};

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(Uuid),
    /// The task is not in a state that allows the call.
    #[error("task {id} is {status}")]
    WrongStatus {
        /// The task.
        id: Uuid,
        /// Its current status.
        status: TaskStatus,
    },
    /// A failed or cancelled task waits on a task that failed or was cancelled.
    #[error("task {0} waits on a task that failed or was cancelled; retry that one first")]
    RetryBlocked(Uuid),
    /// No schedule has this id.
    #[error("schedule {0} not found")]
    ScheduleNotFound(Uuid),
    /// Another schedule has this name.
    #[error("a schedule named {0:?} exists already")]
    ScheduleNameTaken(String),
    /// No workflow has this id.
    #[error("workflow {0} not found")]
    WorkflowNotFound(Uuid),
    /// The workflow finished already.
    #[error("workflow {id} is {status}")]
    WorkflowEnded {
        /// The workflow.
        id: Uuid,
        /// How it ended.
        status: WorkflowStatus,
    },
    /// A task the new one would depend on ended without completing.
    #[error("task {id}, a dependency, is {status}")]
    DependencyEnded {
        /// The dependency.
        id: Uuid,
        /// How it ended.
        status: TaskStatus,
    },
    /// The caller does not hold the lease of the task's current attempt.
    #[error("agent {agent_id} does not hold the lease of task {id}")]
    NotLeaseHolder {
        /// The task.
        id: Uuid,
        /// The agent that asked.
        agent_id: Uuid,
    },
    /// An idempotency key came back with a request other than the one that first used it.
    #[error("idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// The holder of a finished attempt reported it again with a different outcome.
    #[error("task {id} was already {status} by this attempt with a different outcome")]
    OutcomeDiffers {
        /// The task.
        id: Uuid,
        /// The status the first report gave it.
        status: TaskStatus,
    },
    /// The claiming agent is not registered.
    #[error("agent {0} not found")]
    AgentNotFound(Uuid),
    /// The claiming agent has not sent a heartbeat within its TTL.
    #[error("agent {0} is offline; send a heartbeat first")]
    AgentOffline(Uuid),
    /// As many watchers as allowed are watching.
    #[error("too many watchers ({limit}); try again later")]
    TooManyWatchers {
        /// The cap.
        limit: usize,
    },
    /// Another service failed (the agents service, for claims).
    #[error("{0}")]
    Dependency(Error),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] swarm_kit::StoreError),
}

impl From<swarm_kit::validate::InvalidInput> for TaskError {
    fn from(invalid: swarm_kit::validate::InvalidInput) -> Self {
        Self::Invalid(invalid.0)
    }
}

impl From<TaskError> for Error {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Invalid(message) => Error::invalid(message),
            TaskError::NotFound(_)
            | TaskError::AgentNotFound(_)
            | TaskError::WorkflowNotFound(_)
            | TaskError::ScheduleNotFound(_) => Error::not_found(error.to_string()),
            TaskError::IdempotencyKeyReused | TaskError::ScheduleNameTaken(_) => {
                Error::new(swarm_kit::ErrorCode::AlreadyExists, error.to_string())
            }
            TaskError::WrongStatus { .. }
            | TaskError::DependencyEnded { .. }
            | TaskError::RetryBlocked(_)
            | TaskError::WorkflowEnded { .. }
            | TaskError::OutcomeDiffers { .. }
            | TaskError::NotLeaseHolder { .. }
            | TaskError::AgentOffline(_) => Error::precondition(error.to_string()),
            TaskError::TooManyWatchers { .. } => {
                Error::new(swarm_kit::ErrorCode::ResourceExhausted, error.to_string())
            }
            TaskError::Dependency(error) => error,
            TaskError::Storage(cause) => cause.into(),
        }
    }
}

impl From<TaskError> for tonic::Status {
    fn from(error: TaskError) -> Self {
        Error::from(error).into()
    }
}

//! The tasks service's errors and how they map onto the shared error vocabulary.

use swarm_kit::{Error, ErrorCode};
use uuid::Uuid;

use crate::domain::TaskStatus;

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
    /// The caller does not hold the lease of the task's current attempt.
    #[error("agent {agent_id} does not hold the lease of task {id}")]
    NotLeaseHolder {
        /// The task.
        id: Uuid,
        /// The agent that asked.
        agent_id: Uuid,
    },
    /// The service is stopping.
    #[error("service is shutting down")]
    ShuttingDown,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl From<TaskError> for Error {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Invalid(message) => Error::invalid(message),
            TaskError::NotFound(_) => Error::not_found(error.to_string()),
            TaskError::WrongStatus { .. } | TaskError::NotLeaseHolder { .. } => {
                Error::precondition(error.to_string())
            }
            TaskError::ShuttingDown => Error::new(ErrorCode::Unavailable, error.to_string()),
            TaskError::Storage(cause) => cause.into(),
        }
    }
}

impl From<TaskError> for tonic::Status {
    fn from(error: TaskError) -> Self {
        Error::from(error).into()
    }
}

//! The agents service's errors and how they map onto the shared error vocabulary.

use swarm_kit::{Error, ErrorCode, StoreError};
use uuid::Uuid;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// No agent has this id.
    #[error("agent {0} not found")]
    NotFound(Uuid),
    /// Another agent has this name.
    #[error("an agent named {0:?} exists already")]
    NameTaken(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<swarm_kit::validate::InvalidInput> for AgentError {
    fn from(invalid: swarm_kit::validate::InvalidInput) -> Self {
        Self::Invalid(invalid.0)
    }
}

impl From<AgentError> for Error {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::Invalid(message) => Error::invalid(message),
            AgentError::NotFound(_) => Error::not_found(error.to_string()),
            AgentError::NameTaken(_) => Error::new(ErrorCode::AlreadyExists, error.to_string()),
            AgentError::Storage(cause) => cause.into(),
        }
    }
}

impl From<AgentError> for tonic::Status {
    fn from(error: AgentError) -> Self {
        Error::from(error).into()
    }
}

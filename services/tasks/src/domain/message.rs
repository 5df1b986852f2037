//! Messages: the conversation attached to a task, between users, agents and Swarm itself.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::TaskError;
use swarm_kit::validate::{check_name, check_text};

/// The largest message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageRole {
    /// A person or client.
    #[default]
    User,
    /// An agent.
    Agent,
    /// Swarm itself.
    System,
}

impl MessageRole {
    /// Returns the lowercase name used in storage and in the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
            Self::System => "system",
        }
    }
}

impl fmt::Display for MessageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageRole {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "agent" => Ok(Self::Agent),
            "system" => Ok(Self::System),
            other => Err(TaskError::Invalid(format!(
                "unknown message role {other:?}"
            ))),
        }
    }
}

/// A stored message. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id.
    pub id: Uuid,
    /// The task it belongs to.
    pub task_id: Uuid,
    /// Who sent it.
    pub sender: String,
    /// The sender's role.
    pub role: MessageRole,
    /// The text.
    pub content: String,
    /// When it was added.
    pub created_at: i64,
}

/// Which messages a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageScope {
    /// One task's conversation, oldest first.
    Task(Uuid),
    /// Recent messages across tasks, newest first; with a user, only of tasks that user
    /// submitted.
    Recent {
        /// The submitting user to keep to.
        user_id: Option<String>,
    },
}

/// A message to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The task it belongs to.
    pub task_id: Uuid,
    /// Who sends it, 1 to 128 characters.
    pub sender: String,
    /// The sender's role.
    pub role: MessageRole,
    /// The text, 1 byte to 64 KiB.
    pub content: String,
}

impl NewMessage {
    /// Checks the sender and content limits of the API contract.
    pub fn validated(self) -> Result<Self, TaskError> {
        check_name("sender", &self.sender)?;
        if self.content.is_empty() || self.content.len() > MAX_CONTENT_BYTES {
            return Err(TaskError::Invalid(
                "content must be 1 byte to 64 KiB".into(),
            ));
        }
        check_text("content", &self.content)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_bounded() {
        let message = |content: String| NewMessage {
            task_id: Uuid::now_v7(),
            sender: "ada".into(),
            role: MessageRole::User,
            content,
        };
        assert!(message("hi".into()).validated().is_ok());
        assert!(message(String::new()).validated().is_err());
        assert!(
            message("x".repeat(MAX_CONTENT_BYTES + 1))
                .validated()
                .is_err()
        );
    }
}

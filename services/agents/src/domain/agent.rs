//! Agents: what a registration and an update may hold, and the status derived from heartbeats
//! and held tasks.

use std::fmt;
use std::str::FromStr;

use swarm_kit::validate::{MAX_CAPABILITIES, check_name, check_text, name_set};
use uuid::Uuid;

use crate::error::AgentError;

/// The largest config object, in bytes of JSON text.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// The largest `max_concurrency`.
pub const MAX_CONCURRENCY: i32 = 1000;

/// A registered agent as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// The agent id.
    pub id: Uuid,
    /// A unique name.
    pub name: String,
    /// What sort of worker it is.
    pub kind: String,
    /// What it can do, sorted.
    #[sqlx(json)]
    pub capabilities: Vec<String>,
    /// Its config object, as JSON text.
    pub config: String,
    /// The most tasks it may hold at once.
    pub max_concurrency: i32,
    /// Its last sign of life (registration counts as one).
    pub last_heartbeat_at: i64,
    /// When it registered.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// How an agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AgentStatus {
    /// Alive with free slots.
    Idle,
    /// Alive and holding as many tasks as it may.
    Busy,
    /// No heartbeat within the TTL.
    Offline,
}

impl AgentStatus {
    /// Returns the lowercase name used in the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    /// Derives the status of an agent from its last heartbeat and the tasks it holds.
    pub fn derive(agent: &Agent, active_tasks: u32, online_since: i64) -> Self {
        if agent.last_heartbeat_at < online_since {
            Self::Offline
        } else if i64::from(active_tasks) >= i64::from(agent.max_concurrency) {
            Self::Busy
        } else {
            Self::Idle
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Self::Idle),
            "busy" => Ok(Self::Busy),
            "offline" => Ok(Self::Offline),
            other => Err(AgentError::Invalid(format!(
                "unknown agent status {other:?}"
            ))),
        }
    }
}

/// An agent with its derived status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentView {
    /// The stored agent.
    pub agent: Agent,
    /// Its status now.
    pub status: AgentStatus,
    /// Tasks it holds now.
    pub active_tasks: u32,
}

/// A registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// Required, 1 to 128 characters, unique.
    pub name: String,
    /// Empty means "generic".
    pub kind: String,
    /// What the agent can do.
    pub capabilities: Vec<String>,
    /// A JSON object; empty means `{}`.
    pub config: String,
    /// 1 to 1000.
    pub max_concurrency: i32,
}

impl NewAgent {
    /// Checks every rule of the API contract and fills defaults.
    pub fn validated(mut self) -> Result<Self, AgentError> {
        check_name("name", &self.name)?;
        if self.kind.is_empty() {
            "generic".clone_into(&mut self.kind);
        }
        check_name("kind", &self.kind)?;
        self.capabilities = name_set("capability", self.capabilities, MAX_CAPABILITIES)?;
        self.config = config_object(self.config)?;
        check_concurrency(self.max_concurrency)?;
        Ok(self)
    }
}

/// Changes to an agent; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentUpdate {
    /// A new unique name.
    pub name: Option<String>,
    /// A new kind.
    pub kind: Option<String>,
    /// A new capability list.
    pub capabilities: Option<Vec<String>>,
    /// A new config object (JSON text).
    pub config: Option<String>,
    /// A new concurrency.
    pub max_concurrency: Option<i32>,
}

impl AgentUpdate {
    /// Checks the fields that are set, as a registration would.
    pub fn validated(mut self) -> Result<Self, AgentError> {
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        if let Some(kind) = &self.kind {
            check_name("kind", kind)?;
        }
        self.capabilities = self
            .capabilities
            .map(|caps| name_set("capability", caps, MAX_CAPABILITIES))
            .transpose()?;
        self.config = self.config.map(config_object).transpose()?;
        if let Some(concurrency) = self.max_concurrency {
            check_concurrency(concurrency)?;
        }
        Ok(self)
    }
}

/// Filters of an agent list; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Only agents in this status.
    pub status: Option<AgentStatus>,
    /// Only agents with this capability.
    pub capability: Option<String>,
}

impl AgentFilter {
    /// Checks the free-text filter.
    pub fn check(&self) -> Result<(), AgentError> {
        if let Some(capability) = &self.capability {
            check_text("capability", capability)?;
        }
        Ok(())
    }
}

fn config_object(config: String) -> Result<String, AgentError> {
    let text = swarm_kit::validate::json_text("config", config, MAX_CONFIG_BYTES, "{}")?;
    if !text.trim_start().starts_with('{') {
        return Err(AgentError::Invalid("config must be a json object".into()));
    }
    Ok(text)
}

fn check_concurrency(concurrency: i32) -> Result<(), AgentError> {
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(AgentError::Invalid(format!(
            "max_concurrency must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(max_concurrency: i32, last_heartbeat_at: i64) -> Agent {
        Agent {
            id: Uuid::now_v7(),
            name: "a".into(),
            kind: "generic".into(),
            capabilities: vec![],
            config: "{}".into(),
            max_concurrency,
            last_heartbeat_at,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn status_is_derived_from_heartbeat_then_load() {
        assert_eq!(
            AgentStatus::derive(&agent(2, 100), 0, 50),
            AgentStatus::Idle
        );
        assert_eq!(
            AgentStatus::derive(&agent(2, 100), 2, 50),
            AgentStatus::Busy
        );
        assert_eq!(
            AgentStatus::derive(&agent(2, 40), 0, 50),
            AgentStatus::Offline
        );
    }

    #[test]
    fn registrations_are_checked() {
        let valid = NewAgent {
            name: "worker-1".into(),
            kind: String::new(),
            capabilities: vec!["echo".into(), "echo".into()],
            config: String::new(),
            max_concurrency: 2,
        };
        let checked = valid.clone().validated().unwrap();
        assert_eq!(
            (checked.kind.as_str(), checked.config.as_str()),
            ("generic", "{}")
        );
        assert_eq!(checked.capabilities, ["echo"]);
        for bad in [
            NewAgent {
                name: String::new(),
                ..valid.clone()
            },
            NewAgent {
                max_concurrency: 0,
                ..valid.clone()
            },
            NewAgent {
                config: "[1]".into(),
                ..valid.clone()
            },
            NewAgent {
                config: "{".into(),
                ..valid.clone()
            },
        ] {
            assert!(bad.validated().is_err());
        }
    }
}

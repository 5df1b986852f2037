//! Agents: what a registration and an update may hold, and the liveness derived from
//! heartbeats.

use swarm_kit::validate::{MAX_CAPABILITIES, check_name, check_text, name_set};
use uuid::Uuid;

use crate::error::AgentError;

/// The largest config object, in bytes of JSON text.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// The largest `max_concurrency`.
pub const MAX_CONCURRENCY: i32 = 1000;

/// A registered agent as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// The agent id.
    pub id: Uuid,
    /// A unique name.
    pub name: String,
    /// What sort of worker it is.
    pub kind: String,
    /// What it can do, sorted.
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

/// Whether an agent is alive, as its heartbeats tell. How busy a live agent is depends on the
/// tasks it holds, which the tasks service counts; the gateway joins the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Liveness {
    /// A heartbeat arrived within the TTL.
    Online,
    /// No heartbeat within the TTL.
    Offline,
}

impl Liveness {
    /// Returns the lowercase name, as cache keys spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }

    /// Derives the liveness of an agent from its last heartbeat.
    pub fn derive(agent: &Agent, online_since: i64) -> Self {
        if agent.last_heartbeat_at < online_since {
            Self::Offline
        } else {
            Self::Online
        }
    }
}

/// An agent with its liveness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentView {
    /// The stored agent.
    pub agent: Agent,
    /// Whether it is alive now.
    pub liveness: Liveness,
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
    /// Only agents alive or not.
    pub liveness: Option<Liveness>,
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
    fn liveness_is_derived_from_the_last_heartbeat() {
        assert_eq!(Liveness::derive(&agent(2, 100), 50), Liveness::Online);
        assert_eq!(Liveness::derive(&agent(2, 50), 50), Liveness::Online);
        assert_eq!(Liveness::derive(&agent(2, 40), 50), Liveness::Offline);
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

//! Who holds a key: what a key may do ([`Role`]), a stored key without its secret
//! ([`ApiKey`]), and who sent a request ([`Caller`]).

use uuid::Uuid;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, key management included.
    Admin,
    /// Submits tasks and reads its own tasks and messages.
    Client,
    /// Claims and reports tasks, as one agent.
    Agent,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::Admin, Self::Client, Self::Agent];

    /// Returns the lowercase name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Client => "client",
            Self::Agent => "agent",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| format!("role must be admin, client or agent, not {name:?}"))
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its id.
    pub id: Uuid,
    /// Who or what it is for; a client's tasks are recorded under this name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The agent an agent key acts for.
    pub agent_id: Option<Uuid>,
    /// The secret's first characters.
    pub prefix: String,
    /// When it was issued (Unix milliseconds).
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id; nil when authentication is off.
    pub key_id: Uuid,
    /// The key's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The agent an agent key acts for.
    pub agent_id: Option<Uuid>,
}

impl Caller {
    /// The caller of every request while authentication is off.
    pub fn anonymous_admin() -> Self {
        Self {
            key_id: Uuid::nil(),
            name: "anonymous".to_owned(),
            role: Role::Admin,
            agent_id: None,
        }
    }
}

impl From<ApiKey> for Caller {
    fn from(key: ApiKey) -> Self {
        Self {
            key_id: key.id,
            name: key.name,
            role: key.role,
            agent_id: key.agent_id,
        }
    }
}

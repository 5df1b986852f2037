//! `swarm keys`: API key management straight on the gateway's key database, for the first keys
//! of a deployment and for automation (the admin REST route `/api/keys` does the same over HTTP).

use swarm_gateway::auth::{ApiKey, KeyRegistry, NewKey, Role};
use swarm_kit::page::Page;

/// Why a key command failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The database could not be opened.
    #[error("cannot open the key database: {0}")]
    Database(#[from] sqlx::Error),
    /// The key tables could not be brought up to date.
    #[error("cannot migrate the key database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The registry refused.
    #[error(transparent)]
    Key(#[from] swarm_gateway::auth::keys::KeyError),
    /// An argument is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Opens the key registry of the database at `url`.
pub async fn open(url: &str) -> Result<KeyRegistry, KeysError> {
    let pool = swarm_kit::db::connect(url, 1, swarm_kit::db::DEFAULT_SLOW_QUERY).await?;
    Ok(KeyRegistry::new(
        swarm_gateway::auth::storage::open(pool).await?,
    ))
}

/// Issues a key; returns it and its secret.
pub async fn create(
    keys: &KeyRegistry,
    name: String,
    role: &str,
    agent_id: Option<&str>,
) -> Result<(ApiKey, String), KeysError> {
    let role: Role = role.parse().map_err(KeysError::Invalid)?;
    let agent_id = agent_id
        .map(|id| {
            uuid::Uuid::parse_str(id)
                .map_err(|_| KeysError::Invalid("--agent-id must be a uuid".into()))
        })
        .transpose()?;
    Ok(keys
        .create(NewKey {
            name,
            role,
            agent_id,
        })
        .await?)
}

/// Returns every key, oldest first.
pub async fn list(keys: &KeyRegistry) -> Result<Vec<ApiKey>, KeysError> {
    let mut all = Vec::new();
    for page in 1.. {
        let page = Page::new(page, swarm_kit::page::MAX_PER_PAGE)
            .map_err(|error| KeysError::Invalid(error.message))?;
        let (keys, total) = keys.list(page).await?;
        let done = keys.is_empty() || all.len() + keys.len() >= total as usize;
        all.extend(keys);
        if done {
            break;
        }
    }
    Ok(all)
}

/// Revokes the key `id`.
pub async fn revoke(keys: &KeyRegistry, id: &str) -> Result<ApiKey, KeysError> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| KeysError::Invalid("the key id must be a uuid".into()))?;
    keys.revoke(id)
        .await?
        .ok_or_else(|| KeysError::Invalid(format!("no key has id {id}")))
}

//! Key management routes (admin only): issue a key (its secret is in this answer only), list
//! keys, revoke one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use swarm_kit::ErrorCode;
use swarm_kit::time::{rfc3339, timestamp_from_millis};

use utoipa::ToSchema;

use crate::auth::keys::KeyError;
use crate::auth::{ApiKey, KeyRegistry, NewKey};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::model::{PageQuery, PageView};
use crate::schema;
use crate::state::AppState;

/// Body of `POST /api/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(schema_with = schema::key_name)]
    name: String,
    #[schema(schema_with = schema::key_role)]
    role: String,
    #[schema(format = Uuid)]
    agent_id: Option<String>,
}

/// A key as the API shows it; `key`, the secret, only when it is issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    name: String,
    role: &'static str,
    agent_id: Option<String>,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl KeyView {
    /// Shows `key`, with its secret when given.
    pub fn new(key: ApiKey, secret: Option<String>) -> Self {
        Self {
            id: key.id.to_string(),
            name: key.name,
            role: key.role.as_str(),
            agent_id: key.agent_id.map(|id| id.to_string()),
            prefix: key.prefix,
            created_at: rfc3339(&timestamp_from_millis(key.created_at)),
            revoked_at: key
                .revoked_at
                .map(|millis| rfc3339(&timestamp_from_millis(millis))),
            key: secret,
        }
    }
}

fn registry(state: &AppState) -> Result<&KeyRegistry, ApiError> {
    state
        .auth
        .keys()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this gateway keeps no keys"))
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Invalid(message) => ApiError::invalid(message),
            KeyError::Store(error) => swarm_kit::Error::from(error).into(),
            KeyError::Busy => ApiError::new(ErrorCode::Unavailable, error.to_string()),
        }
    }
}

/// Issues a key: 201 with the key and, this once, its secret.
#[utoipa::path(post, operation_id = "createKey", path = "/api/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "The key, with its secret (shown this once).", body = KeyView)))]
pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<KeyView>), ApiError> {
    let role = body.role.parse().map_err(ApiError::invalid)?;
    let agent_id = body
        .agent_id
        .as_deref()
        .map(|id| {
            uuid::Uuid::parse_str(id).map_err(|_| ApiError::invalid("agent_id must be a uuid"))
        })
        .transpose()?;
    let (key, secret) = registry(&state)?
        .create(NewKey {
            name: body.name,
            role,
            agent_id,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyView::new(key, Some(secret))),
    ))
}

/// Lists keys, oldest first, without their secrets.
#[utoipa::path(get, operation_id = "listKeys", path = "/api/keys", tag = "keys", params(PageQuery),
    responses((status = 200, description = "A page of keys, without secrets.", body = PageView<KeyView>)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<PageView<KeyView>>, ApiError> {
    let page = query.to_page()?;
    let (keys, total) = registry(&state)?.list(page).await?;
    Ok(axum::Json(PageView::new(
        keys,
        |key| KeyView::new(key, None),
        Some(page.info(total)),
    )))
}

/// Revokes a key: 204; it stops working at once.
#[utoipa::path(delete, operation_id = "revokeKey", path = "/api/keys/{id}", tag = "keys", params(("id" = uuid::Uuid, Path, description = "The key id (a UUID).")),
    responses((status = 204, description = "Revoked; it stops working at once.")))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::invalid("id must be a uuid"))?;
    match registry(&state)?.revoke(id).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("key {id} not found"),
        )),
    }
}

/// Who the caller is: its key's name and role (and agent, for an agent key), and whether the
/// gateway checks keys at all.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentKeyView {
    /// The key's name (empty while keys are not checked).
    name: String,
    /// What the key may do.
    #[schema(schema_with = schema::key_role)]
    role: &'static str,
    /// The agent an agent key acts for.
    agent_id: Option<String>,
    /// False when the gateway runs with `SWARM_AUTH=off`: every caller is an admin.
    auth: bool,
}

/// Describes the caller's own key, for clients (the dashboard) that adapt to its role.
#[utoipa::path(get, operation_id = "currentKey", path = "/api/keys/current", tag = "keys",
    responses((status = 200, description = "The caller's key.", body = CurrentKeyView)))]
pub async fn current(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> axum::Json<CurrentKeyView> {
    axum::Json(CurrentKeyView {
        name: caller.name,
        role: caller.role.as_str(),
        agent_id: caller.agent_id.map(|id| id.to_string()),
        auth: state.config.auth,
    })
}

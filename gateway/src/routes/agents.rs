//! Agent routes: register, list, read, update, delete, heartbeat, and read an agent's config.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_proto::agents::v1 as pb;

use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::fleet;
use crate::model::{
    AgentPath, AgentView, PageView, agent_status_from_name, json_text, page, raw_json,
};
use crate::schema;
use crate::state::AppState;

/// Body of `POST /api/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    #[schema(schema_with = schema::name)]
    name: String,
    #[schema(schema_with = schema::name)]
    kind: Option<String>,
    #[schema(schema_with = schema::capabilities)]
    capabilities: Option<Vec<String>>,
    #[schema(schema_with = schema::config)]
    config: Option<Box<RawValue>>,
    #[schema(minimum = 1, maximum = 1000)]
    max_concurrency: Option<i32>,
}

impl From<RegisterAgent> for pb::RegisterAgentRequest {
    fn from(body: RegisterAgent) -> Self {
        Self {
            name: body.name,
            kind: body.kind.unwrap_or_default(),
            capabilities: body.capabilities.unwrap_or_default(),
            config_json: json_text(body.config),
            max_concurrency: body.max_concurrency,
            resume: false,
        }
    }
}

/// Registers an agent: 201, or 409 when the name is taken.
#[utoipa::path(post, operation_id = "registerAgent", path = "/api/agents", tag = "agents", request_body = RegisterAgent,
    responses((status = 201, description = "The agent.", body = AgentView)))]
pub async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterAgent>,
) -> Result<(StatusCode, axum::Json<AgentView>), ApiError> {
    let request = pb::RegisterAgentRequest::from(body);
    let agent = state
        .agents()
        .register_agent(state.ask(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(agent.into())))
}

/// Registers the agent a worker declares, or resumes it (its kind, capabilities and concurrency
/// become the declared ones; its config stays): with an agent key, the key's own agent whatever
/// the name; with an admin key, the agent of that name.
#[utoipa::path(post, operation_id = "joinAgent", path = "/api/agents/join", tag = "agents", request_body = RegisterAgent,
    responses((status = 200, description = "The agent, registered or resumed.", body = AgentView)))]
pub async fn join(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<RegisterAgent>,
) -> Result<axum::Json<AgentView>, ApiError> {
    let agent = crate::workers::join(&state, &caller, body.into()).await?;
    Ok(axum::Json(agent.into()))
}

/// Query of `GET /api/agents`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgents {
    /// Only agents in this status.
    #[param(schema_with = schema::agent_status)]
    status: Option<String>,
    /// Only agents with this capability.
    #[param(schema_with = schema::text)]
    capability: Option<String>,
    /// From 1; default 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists agents, oldest first.
#[utoipa::path(get, operation_id = "listAgents", path = "/api/agents", tag = "agents", params(ListAgents),
    responses((status = 200, description = "A page of agents.", body = PageView<AgentView>)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListAgents>,
) -> Result<axum::Json<PageView<AgentView>>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(agent_status_from_name)
        .transpose()?;
    let status = status.unwrap_or(pb::AgentStatus::Unspecified);
    let page = page(query.page, query.per_page)?;
    let (agents, info) = fleet::list(&state, status, query.capability, page).await?;
    Ok(axum::Json(PageView::new(agents, AgentView::from, info)))
}

/// Returns one agent.
#[utoipa::path(get, operation_id = "getAgent", path = "/api/agents/{id}", tag = "agents", params(AgentPath),
    responses((status = 200, description = "The agent.", body = AgentView)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<AgentView>, ApiError> {
    caller.check_agent(&id)?;
    let agent = state
        .agents()
        .get_agent(state.ask(pb::GetAgentRequest { id }))
        .await?
        .into_inner();
    Ok(axum::Json(fleet::one(&state, agent).await.into()))
}

/// Lists agents, as `GET /api/agents` does.
#[utoipa::path(get, operation_id = "listAgentsAlias", path = "/api/agents/list", tag = "agents", params(ListAgents),
    responses((status = 200, description = "A page of agents.", body = PageView<AgentView>)))]
pub async fn list_alias(
    state: State<AppState>,
    query: Query<ListAgents>,
) -> Result<axum::Json<PageView<AgentView>>, ApiError> {
    list(state, query).await
}

/// Body of `PATCH /api/agents/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(schema_with = schema::name)]
    name: Option<String>,
    #[schema(schema_with = schema::name)]
    kind: Option<String>,
    #[schema(schema_with = schema::capabilities)]
    capabilities: Option<Vec<String>>,
    #[schema(schema_with = schema::config)]
    config: Option<Box<RawValue>>,
    #[schema(minimum = 1, maximum = 1000)]
    max_concurrency: Option<i32>,
}

/// Changes any of an agent's fields.
#[utoipa::path(patch, operation_id = "updateAgent", path = "/api/agents/{id}", tag = "agents", params(AgentPath), request_body = UpdateAgent,
    responses((status = 200, description = "The agent, changed.", body = AgentView)))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<UpdateAgent>,
) -> Result<axum::Json<AgentView>, ApiError> {
    let request = pb::UpdateAgentRequest {
        id,
        name: body.name,
        kind: body.kind,
        capabilities: body
            .capabilities
            .map(|values| pb::CapabilityList { values }),
        config_json: body.config.map(|config| config.get().to_owned()),
        max_concurrency: body.max_concurrency,
    };
    let agent = state
        .agents()
        .update_agent(state.ask(request))
        .await?
        .into_inner();
    Ok(axum::Json(fleet::one(&state, agent).await.into()))
}

/// Deletes an agent: 204. Its active tasks go back to the queue.
#[utoipa::path(delete, operation_id = "deleteAgent", path = "/api/agents/{id}", tag = "agents", params(AgentPath),
    responses((status = 204, description = "Deleted; its active tasks went back to the queue.")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .agents()
        .delete_agent(state.ask(pb::DeleteAgentRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/agents/{id}/heartbeat`; it may be left out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Ids of the tasks the agent is working on. Their leases are renewed; a task the agent
    /// was handed more than a few seconds ago but does not list goes back to the queue (the
    /// answer to its claim was lost). Leave it out to record only a sign of life.
    #[schema(max_items = 1000, value_type = Option<Vec<String>>, format = Uuid)]
    active_tasks: Option<Vec<String>>,
}

/// Answer of a heartbeat: the agent, and the listed tasks it should stop.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatView {
    #[serde(flatten)]
    agent: AgentView,
    /// Listed tasks the agent no longer holds (cancelled, timed out or taken back): stop them.
    cancel: Vec<String>,
}

/// Records an agent's heartbeat, squaring the tasks it lists as held.
#[utoipa::path(post, operation_id = "heartbeat", path = "/api/agents/{id}/heartbeat", tag = "agents", params(AgentPath), request_body(content = Option<Heartbeat>, description = "Optional: the tasks the agent holds."),
    responses((status = 200, description = "The agent, seen now, and the listed tasks it no longer holds.", body = HeartbeatView)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<Option<Heartbeat>>,
) -> Result<axum::Json<HeartbeatView>, ApiError> {
    caller.check_agent(&id)?;
    let active_tasks = body.and_then(|body| body.active_tasks);
    let (agent, cancel) = crate::workers::heartbeat(&state, id, active_tasks).await?;
    Ok(axum::Json(HeartbeatView {
        agent: agent.into(),
        cancel,
    }))
}

/// Returns an agent's config object.
#[utoipa::path(get, operation_id = "getAgentConfig", path = "/api/agents/{id}/config", tag = "agents", params(AgentPath),
    responses((status = 200, description = "The agent's config object.", body = serde_json::Value)))]
pub async fn config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<Box<RawValue>>, ApiError> {
    caller.check_agent(&id)?;
    let config = state
        .agents()
        .get_agent_config(state.ask(pb::GetAgentConfigRequest { id }))
        .await?
        .into_inner();
    Ok(axum::Json(raw_json(config.config_json)))
}

//! The JSON shapes of the REST API (see docs/api.md) and their conversions from protobuf. JSON
//! payloads and results travel as raw JSON text end to end and are never re-parsed here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_kit::page::Page;
use swarm_kit::time::rfc3339;
use swarm_proto::common::v1::PageInfo;
use swarm_proto::tasks::v1 as pb;

use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::schema::{AGENT_STATUSES, MESSAGE_ROLES, TASK_STATUSES, names};

/// A task as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    id: String,
    title: String,
    kind: String,
    #[schema(value_type = serde_json::Value)]
    payload: Box<RawValue>,
    status: &'static str,
    priority: i32,
    required_capabilities: Vec<String>,
    agent_id: Option<String>,
    user_id: Option<String>,
    attempts: i32,
    max_attempts: i32,
    timeout_seconds: i32,
    /// Seconds one attempt may run in all, if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_timeout_seconds: Option<i32>,
    progress: ProgressView,
    #[schema(value_type = Option<serde_json::Value>)]
    result: Option<Box<RawValue>>,
    error: Option<String>,
    lease_id: Option<String>,
    lease_expires_at: Option<String>,
    available_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// The workflow the task is part of.
    workflow_id: Option<String>,
    /// The schedule that created the task.
    schedule_id: Option<String>,
    /// On a claimed task that depends on others: each one's result, by task id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, serde_json::Value>>)]
    dependency_results: Option<BTreeMap<String, Box<RawValue>>>,
}

/// Progress as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
struct ProgressView {
    percent: i32,
    message: Option<String>,
}

/// Returns the REST name of a task status.
pub fn status_name(status: pb::TaskStatus) -> &'static str {
    name_of(&TASK_STATUSES, status).unwrap_or("unknown")
}

/// Parses a REST status filter.
pub fn status_from_name(name: &str) -> Result<pb::TaskStatus, ApiError> {
    value_of("status", &TASK_STATUSES, name)
}

/// Returns the REST name of `value` in `table`, if it has one.
fn name_of<E: PartialEq, const N: usize>(
    table: &[(E, &'static str); N],
    value: E,
) -> Option<&'static str> {
    table
        .iter()
        .find(|(known, _)| *known == value)
        .map(|(_, name)| *name)
}

/// Returns the value `name` stands for in `table`; any other name is refused as `what`.
fn value_of<E: Copy, const N: usize>(
    what: &str,
    table: &[(E, &'static str); N],
    name: &str,
) -> Result<E, ApiError> {
    table
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(value, _)| *value)
        .ok_or_else(|| not_one_of(what, &names(table), name))
}

/// Explains that `what` must be one of `names`.
pub fn not_one_of(what: &str, names: &[&str], got: &str) -> ApiError {
    ApiError::invalid(format!(
        "{what} must be one of {} (got {got:?})",
        names.join(", ")
    ))
}

/// Wraps JSON text that a service already validated, to send it on as it is.
pub fn raw_json(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| {
        // Services store only validated JSON; anything else is shown as null, not a 500.
        tracing::warn!("service returned invalid json");
        RawValue::from_string("null".to_owned()).expect("null is json")
    })
}

impl From<pb::Task> for TaskView {
    fn from(task: pb::Task) -> Self {
        let status = status_name(task.status());
        let progress = task.progress.unwrap_or_default();
        Self {
            status,
            id: task.id,
            title: task.title,
            kind: task.kind,
            payload: raw_json(task.payload_json),
            priority: task.priority,
            required_capabilities: task.required_capabilities,
            agent_id: task.agent_id,
            user_id: task.user_id,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            timeout_seconds: task.timeout_seconds,
            execution_timeout_seconds: task.execution_timeout_seconds,
            progress: ProgressView {
                percent: progress.percent,
                message: progress.message,
            },
            result: task.result_json.map(raw_json),
            error: task.error,
            lease_id: task.lease_id,
            lease_expires_at: task.lease_expires_at.as_ref().map(rfc3339),
            available_at: task.available_at.as_ref().map(rfc3339),
            created_at: task.created_at.as_ref().map(rfc3339),
            updated_at: task.updated_at.as_ref().map(rfc3339),
            started_at: task.started_at.as_ref().map(rfc3339),
            finished_at: task.finished_at.as_ref().map(rfc3339),
            workflow_id: task.workflow_id,
            schedule_id: task.schedule_id,
            dependency_results: (!task.dependency_results_json.is_empty()).then(|| {
                task.dependency_results_json
                    .into_iter()
                    .map(|(id, result)| (id, raw_json(result)))
                    .collect()
            }),
        }
    }
}

/// An attempt at a task as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt, counting across retries.
    attempt: i32,
    /// The agent that made it.
    agent_id: Option<String>,
    /// When it was claimed.
    started_at: Option<String>,
    /// When it ended, if it has.
    finished_at: Option<String>,
    /// How it ended: `running` (not yet), `completed`, `failed`, `lease_expired`,
    /// `agent_lost`, `cancelled` or `timed_out`.
    outcome: String,
    /// The error it ended with.
    error: Option<String>,
}

impl From<pb::Attempt> for AttemptView {
    fn from(attempt: pb::Attempt) -> Self {
        let outcome = attempt.outcome().as_str_name();
        Self {
            outcome: outcome
                .strip_prefix("ATTEMPT_OUTCOME_")
                .unwrap_or(outcome)
                .to_ascii_lowercase(),
            attempt: attempt.attempt,
            agent_id: attempt.agent_id,
            started_at: attempt.started_at.as_ref().map(rfc3339),
            finished_at: attempt.finished_at.as_ref().map(rfc3339),
            error: attempt.error,
        }
    }
}

/// A message as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    id: String,
    task_id: String,
    sender: String,
    role: &'static str,
    content: String,
    created_at: Option<String>,
}

impl From<pb::Message> for MessageView {
    fn from(message: pb::Message) -> Self {
        Self {
            role: name_of(&MESSAGE_ROLES, message.role()).unwrap_or("user"),
            id: message.id,
            task_id: message.task_id,
            sender: message.sender,
            content: message.content,
            created_at: message.created_at.as_ref().map(rfc3339),
        }
    }
}

/// Parses a REST message role.
pub fn role_from_name(name: &str) -> Result<pb::MessageRole, ApiError> {
    value_of("role", &MESSAGE_ROLES, name)
}

/// A page of items, as every REST list answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView<T> {
    items: Vec<T>,
    page: u32,
    per_page: u32,
    total: u64,
    pages: u64,
}

impl<T> PageView<T> {
    /// Builds a page from the service's items, each shown as `view` makes it, and its page
    /// info.
    pub fn new<S>(
        items: impl IntoIterator<Item = S>,
        view: impl FnMut(S) -> T,
        info: Option<PageInfo>,
    ) -> Self {
        let info = info.unwrap_or_default();
        Self {
            items: items.into_iter().map(view).collect(),
            page: info.page,
            per_page: info.per_page,
            total: info.total,
            pages: info.pages,
        }
    }

    /// Builds the page the tasks service answered a list call with, each item shown as `view`
    /// makes it.
    pub fn listed<L: Listing>(
        answer: tonic::Response<L>,
        view: impl FnMut(L::Item) -> T,
    ) -> axum::Json<Self> {
        let (items, info) = answer.into_inner().into_parts();
        axum::Json(Self::new(items, view, info))
    }
}

/// The tasks service's answer to a list call: one page of items and where it sits.
pub trait Listing {
    /// What the page holds.
    type Item;

    /// Parts the answer into its items and its page info.
    fn into_parts(self) -> (Vec<Self::Item>, Option<PageInfo>);
}

/// Implements [`Listing`] for answers that hold their items in the field named.
macro_rules! listings {
    ($($answer:ident { $items:ident: $item:ident }),* $(,)?) => {$(
        impl Listing for pb::$answer {
            type Item = pb::$item;

            fn into_parts(self) -> (Vec<pb::$item>, Option<PageInfo>) {
                (self.$items, self.page)
            }
        }
    )*};
}

listings! {
    ListTasksResponse { tasks: Task },
    ListAttemptsResponse { attempts: Attempt },
    ListMessagesResponse { messages: Message },
    ListSchedulesResponse { schedules: Schedule },
    ListWorkflowsResponse { workflows: Workflow },
}

/// Pagination query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1; default 1.
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

impl PageQuery {
    /// Validates the page (out-of-range values are refused, not clamped) for a gRPC request.
    pub fn to_proto(&self) -> Result<swarm_proto::common::v1::PageRequest, ApiError> {
        page_request(self.page, self.per_page)
    }

    /// Validates the page (out-of-range values are refused, not clamped).
    pub fn to_page(&self) -> Result<Page, ApiError> {
        page(self.page, self.per_page)
    }
}

/// Validates REST pagination parameters: absent means page 1 of 20.
pub fn page(page: Option<u32>, per_page: Option<u32>) -> Result<Page, ApiError> {
    Ok(Page::new(
        page.unwrap_or(1),
        per_page.unwrap_or(swarm_kit::page::DEFAULT_PER_PAGE),
    )?)
}

/// Validates REST pagination parameters (absent means page 1 of 20) for a gRPC request.
pub fn page_request(
    page: Option<u32>,
    per_page: Option<u32>,
) -> Result<swarm_proto::common::v1::PageRequest, ApiError> {
    let page = self::page(page, per_page)?;
    Ok(swarm_proto::common::v1::PageRequest {
        page: page.page,
        per_page: page.per_page,
    })
}

/// Renders optional JSON as the text services expect (absent means null).
pub fn json_text(value: Option<Box<RawValue>>) -> String {
    value.map(|raw| raw.get().to_owned()).unwrap_or_default()
}

/// An agent as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    id: String,
    name: String,
    kind: String,
    capabilities: Vec<String>,
    #[schema(value_type = serde_json::Value)]
    config: Box<RawValue>,
    status: &'static str,
    max_concurrency: i32,
    active_tasks: i32,
    last_heartbeat_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<swarm_proto::agents::v1::Agent> for AgentView {
    fn from(agent: swarm_proto::agents::v1::Agent) -> Self {
        Self {
            status: name_of(&AGENT_STATUSES, agent.status()).unwrap_or("unknown"),
            id: agent.id,
            name: agent.name,
            kind: agent.kind,
            capabilities: agent.capabilities,
            config: raw_json(agent.config_json),
            max_concurrency: agent.max_concurrency,
            active_tasks: agent.active_tasks,
            last_heartbeat_at: agent.last_heartbeat_at.as_ref().map(rfc3339),
            created_at: agent.created_at.as_ref().map(rfc3339),
            updated_at: agent.updated_at.as_ref().map(rfc3339),
        }
    }
}

/// Parses a REST agent status filter.
pub fn agent_status_from_name(
    name: &str,
) -> Result<swarm_proto::agents::v1::AgentStatus, ApiError> {
    value_of("status", &AGENT_STATUSES, name)
}

/// The task a route names.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The task id (a UUID).
    pub id: uuid::Uuid,
}

/// The workflow a route names.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkflowPath {
    /// The workflow id (a UUID).
    pub id: uuid::Uuid,
}

/// The schedule a route names.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SchedulePath {
    /// The schedule id (a UUID).
    pub id: uuid::Uuid,
}

/// The agent a route names.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentPath {
    /// The agent id (a UUID).
    pub id: uuid::Uuid,
}

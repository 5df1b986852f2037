//! Task routes: submit, read, list, cancel, watch (Server-Sent Events), background processing,
//! and the agent-side claim, progress, complete and fail calls.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use swarm_proto::tasks::v1 as pb;

use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::model::{
    AttemptView, PageQuery, PageView, TaskPath, TaskView, json_text, page_request, status_from_name,
};
use crate::schema;
use crate::state::AppState;

/// The header that makes task submission idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Body of `POST /api/tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    #[schema(schema_with = schema::title)]
    title: String,
    #[schema(schema_with = schema::name)]
    kind: Option<String>,
    #[schema(value_type = Option<serde_json::Value>)]
    payload: Option<Box<RawValue>>,
    #[schema(minimum = 0, maximum = 9)]
    priority: Option<i32>,
    #[schema(schema_with = schema::capabilities)]
    required_capabilities: Option<Vec<String>>,
    #[schema(format = Uuid)]
    agent_id: Option<String>,
    #[schema(schema_with = schema::name)]
    user_id: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<i32>,
    #[schema(minimum = 1, maximum = 86400)]
    timeout_seconds: Option<i32>,
    /// Seconds one attempt may run in all, renewals or not; past it the attempt fails with
    /// "execution timed out" and retries follow `max_attempts`.
    #[schema(minimum = 1, maximum = 604800)]
    execution_timeout_seconds: Option<i32>,
    /// When the task may start (RFC 3339); until then it is `scheduled`. Not with
    /// `delay_seconds`.
    #[schema(value_type = Option<String>, format = DateTime)]
    run_at: Option<String>,
    /// Seconds from now until the task may start; until then it is `scheduled`. Not with
    /// `run_at`.
    #[schema(minimum = 1, maximum = 31536000)]
    delay_seconds: Option<u32>,
    /// Tasks (at most 100, the caller's own; in a workflow, keys of its tasks) that must
    /// complete first: until then the task is `waiting`; if one fails or is cancelled, so is
    /// this one.
    #[schema(max_items = 100)]
    depends_on: Option<Vec<String>>,
}

/// Creates a task: 201 with the task, or 200 with the earlier task when the caller's tenant
/// sent the same request with the same `Idempotency-Key` before (the same key with another
/// request: 409).
#[utoipa::path(post, operation_id = "createTask", path = "/api/tasks", tag = "tasks", request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$", description = "1 to 128 visible ASCII characters. Makes a resubmission answer 200 with the task the key created first.")),
    responses((status = 201, description = "The task, queued.", body = TaskView),
        (status = 200, description = "The task this idempotency key created before.", body = TaskView)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<CreateTask>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("idempotency-key must be visible ascii"))
        })
        .transpose()?;
    let request = pb::CreateTaskRequest {
        idempotency_key,
        ..creation(&caller, body)?
    };
    let response = state
        .tasks()
        .create_task(state.ask(request))
        .await?
        .into_inner();
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(task_view(response.task)?)))
}

/// Turns a creation body into the tasks service's request, for `caller`.
pub fn creation(caller: &Caller, body: CreateTask) -> Result<pb::CreateTaskRequest, ApiError> {
    Ok(pb::CreateTaskRequest {
        user_id: submitter(caller, body.user_id)?,
        title: body.title,
        kind: body.kind.unwrap_or_default(),
        payload_json: json_text(body.payload),
        priority: body.priority.unwrap_or(0),
        required_capabilities: body.required_capabilities.unwrap_or_default(),
        agent_id: body.agent_id,
        max_attempts: body.max_attempts,
        timeout_seconds: body.timeout_seconds,
        execution_timeout_seconds: body.execution_timeout_seconds,
        idempotency_key: None,
        tenant: caller.tenant().to_owned(),
        run_at: body
            .run_at
            .map(|text| {
                text.parse()
                    .map_err(|_| ApiError::invalid("run_at must be an rfc 3339 time"))
            })
            .transpose()?,
        delay_seconds: body.delay_seconds,
        depends_on: body.depends_on.unwrap_or_default(),
    })
}

/// Body of `POST /api/tasks/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTasks {
    /// 1 to 1000 tasks, each as `POST /api/tasks` takes it.
    #[schema(min_items = 1, max_items = 1000)]
    tasks: Vec<CreateTask>,
}

/// Answer of `POST /api/tasks/batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTasks {
    /// The tasks, in the order asked.
    items: Vec<TaskView>,
}

/// Creates 1 to 1000 tasks in one transaction: all of them, or (when one is invalid, named by
/// its index) none.
#[utoipa::path(post, operation_id = "createTasks", path = "/api/tasks/batch", tag = "tasks", request_body = CreateTasks,
    responses((status = 201, description = "The tasks, in the order asked.", body = CreatedTasks)))]
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateTasks>,
) -> Result<(StatusCode, axum::Json<CreatedTasks>), ApiError> {
    let tasks = body
        .tasks
        .into_iter()
        .enumerate()
        .map(|(index, task)| {
            creation(&caller, task).map_err(|error| error.within(&format!("tasks[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let request = pb::CreateTasksRequest { tasks };
    let created = state
        .tasks()
        .create_tasks(state.ask(request))
        .await?
        .into_inner();
    let items = created.tasks.into_iter().map(TaskView::from).collect();
    Ok((StatusCode::CREATED, axum::Json(CreatedTasks { items })))
}

/// Query of `GET /api/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasks {
    /// Only tasks in this status.
    #[param(schema_with = schema::task_status)]
    status: Option<String>,
    /// Only tasks held by or pinned to this agent.
    #[param(format = Uuid)]
    agent_id: Option<String>,
    /// Only tasks submitted for this user.
    #[param(schema_with = schema::text)]
    user_id: Option<String>,
    /// Only tasks of this kind.
    #[param(schema_with = schema::text)]
    kind: Option<String>,
    /// Only tasks whose title contains this text, whatever the case of its (ASCII) letters.
    #[param(schema_with = schema::text)]
    q: Option<String>,
    /// From 1; default 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists tasks, newest first.
#[utoipa::path(get, operation_id = "listTasks", path = "/api/tasks", tag = "tasks", params(ListTasks),
    responses((status = 200, description = "A page of tasks, newest first.", body = PageView<TaskView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListTasks>,
) -> Result<axum::Json<PageView<TaskView>>, ApiError> {
    let user_id = submitter(&caller, query.user_id)?;
    let status = query.status.as_deref().map(status_from_name).transpose()?;
    let request = pb::ListTasksRequest {
        status: status.unwrap_or(pb::TaskStatus::Unspecified).into(),
        agent_id: query.agent_id,
        user_id,
        kind: query.kind,
        page: Some(page_request(query.page, query.per_page)?),
        title_contains: query.q.filter(|text| !text.is_empty()),
    };
    let answer = state.tasks().list_tasks(state.ask(request)).await?;
    Ok(PageView::listed(answer, TaskView::from))
}

/// Returns one task.
#[utoipa::path(get, operation_id = "getTask", path = "/api/tasks/{id}", tag = "tasks", params(TaskPath),
    responses((status = 200, description = "The task.", body = TaskView)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<TaskView>, ApiError> {
    let task = state
        .tasks()
        .get_task(state.ask(pb::GetTaskRequest { id: id.clone() }))
        .await?
        .into_inner();
    caller.check_reach(&task)?;
    Ok(axum::Json(task.into()))
}

/// Refuses the caller the task `id` when it may not reach it (another client's task, a task
/// an agent does not hold), as if it did not exist; admins pass without a lookup.
pub async fn check_visible(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if !caller.is_confined() {
        return Ok(());
    }
    let task = state
        .tasks()
        .get_task(state.ask(pb::GetTaskRequest { id: id.to_owned() }))
        .await?
        .into_inner();
    caller.check_reach(&task)
}

/// The task the path's `{id}` names, extracted only when the caller may reach it (a task
/// outside its reach answers 404, as one that does not exist), so a route about one task
/// cannot forget the check.
#[derive(Debug)]
pub struct VisibleTask {
    /// The task's id, as the path gave it.
    pub id: String,
    /// Who asks.
    pub caller: Caller,
}

impl FromRequestParts<AppState> for VisibleTask {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (id, caller) = path_task_and_caller(parts, state).await?;
        check_visible(state, &caller, &id).await?;
        Ok(Self { id, caller })
    }
}

/// Reads the task id the path names (`{id}`) and the caller that authentication identified.
pub async fn path_task_and_caller(
    parts: &mut Parts,
    state: &AppState,
) -> Result<(String, Caller), ApiError> {
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
        tracing::error!("a request about a task reached its handler without a caller");
        ApiError::new(swarm_kit::ErrorCode::Internal, "internal error")
    })?;
    Ok((id, caller))
}

/// What a route that changes one task answers: the task as it is now.
type TaskAnswer = Result<axum::Json<TaskView>, ApiError>;

/// A change to one task that the tasks service makes in one call.
enum Change {
    Cancel,
    Retry,
}

/// Makes `change` to the task `id` and answers the task.
async fn change(state: &AppState, id: String, change: Change) -> TaskAnswer {
    let mut tasks = state.tasks();
    let changed = match change {
        Change::Cancel => {
            tasks
                .cancel_task(state.ask(pb::CancelTaskRequest { id }))
                .await
        }
        Change::Retry => {
            tasks
                .retry_task(state.ask(pb::RetryTaskRequest { id }))
                .await
        }
    };
    Ok(axum::Json(changed?.into_inner().into()))
}

/// Returns the user a task is submitted or listed under: a client's own name (naming another
/// is refused), or what other callers asked for.
pub fn submitter(caller: &Caller, asked: Option<String>) -> Result<Option<String>, ApiError> {
    match (caller.client_user(), asked) {
        (Some(own), Some(asked)) if asked != own => Err(ApiError::new(
            swarm_kit::ErrorCode::PermissionDenied,
            "a client key acts for its own user only",
        )),
        (Some(own), _) => Ok(Some(own.to_owned())),
        (None, asked) => Ok(asked),
    }
}

/// Cancels a task; a finished one answers 409.
#[utoipa::path(post, operation_id = "cancelTask", path = "/api/tasks/{id}/cancel", tag = "tasks", params(TaskPath),
    responses((status = 200, description = "The task, cancelled.", body = TaskView)))]
pub async fn cancel(State(state): State<AppState>, task: VisibleTask) -> TaskAnswer {
    change(&state, task.id, Change::Cancel).await
}

/// Queues a failed or cancelled task again with a fresh attempt budget; any other status
/// answers 409.
#[utoipa::path(post, operation_id = "retryTask", path = "/api/tasks/{id}/retry", tag = "tasks", params(TaskPath),
    responses((status = 200, description = "The task, queued again.", body = TaskView)))]
pub async fn retry(State(state): State<AppState>, task: VisibleTask) -> TaskAnswer {
    change(&state, task.id, Change::Retry).await
}

/// Lists a task's attempts, oldest first: who made each, when, and how it ended.
#[utoipa::path(get, operation_id = "listAttempts", path = "/api/tasks/{id}/attempts", tag = "tasks", params(TaskPath, PageQuery),
    responses((status = 200, description = "A page of attempts.", body = PageView<AttemptView>)))]
pub async fn attempts(
    State(state): State<AppState>,
    task: VisibleTask,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<PageView<AttemptView>>, ApiError> {
    let request = pb::ListAttemptsRequest {
        id: task.id,
        page: Some(page.to_proto()?),
    };
    let answer = state.tasks().list_attempts(state.ask(request)).await?;
    Ok(PageView::listed(answer, AttemptView::from))
}

/// Streams a task's changes as Server-Sent Events named `task`, ending after a final status
/// (or with one `error` event if the watch breaks).
#[utoipa::path(get, operation_id = "watchTask", path = "/api/tasks/{id}/events", tag = "tasks", params(TaskPath),
    responses((status = 200, description = "Server-Sent Events named `task`, one per change, ending after a final status.", content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(state): State<AppState>,
    task: VisibleTask,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = state.streams.take(task.caller.key_id)?;
    let changes = state
        .tasks
        .clone()
        .watch_task(pb::WatchTaskRequest { id: task.id })
        .await?
        .into_inner();
    let stopping = state.shutdown.clone();
    let events = followed(task.caller, changes)
        .map(|change| match change {
            Ok(pb::TaskEvent { task: Some(task) }) => Event::default()
                .event("task")
                .json_data(TaskView::from(task))
                .unwrap_or_else(|_| Event::default().event("error").data("cannot encode task")),
            Ok(pb::TaskEvent { task: None }) => Event::default().comment("empty event"),
            Err(status) => {
                let error = ApiError::from(status).0;
                Event::default().event("error").data(
                    json!({"error": {"code": error.code.as_str(), "message": error.message}})
                        .to_string(),
                )
            }
        })
        .map(Ok)
        .take_until(async move { stopping.cancelled().await });
    Ok(Sse::new(slot.hold(events)).keep_alive(KeepAlive::default()))
}

/// Ends a watch of `changes` before the first change `caller` may not follow (see
/// [`Caller::may_follow`]): an agent sees its own attempt, never the next one.
pub fn followed<E>(
    caller: Caller,
    changes: impl Stream<Item = Result<pb::TaskEvent, E>>,
) -> impl Stream<Item = Result<pb::TaskEvent, E>> {
    changes.take_while(move |change| {
        let shown = match change {
            Ok(pb::TaskEvent { task: Some(task) }) => caller.may_follow(task),
            _ => true,
        };
        std::future::ready(shown)
    })
}

/// Body of `POST /api/process`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Process {
    #[schema(schema_with = schema::name)]
    kind: Option<String>,
    #[schema(value_type = Option<serde_json::Value>)]
    payload: Option<Box<RawValue>>,
    #[schema(schema_with = schema::title)]
    title: Option<String>,
}

/// Queues background work and answers 202 with its task id at once.
#[utoipa::path(post, operation_id = "process", path = "/api/process", tag = "tasks", request_body = Process,
    responses((status = 202, description = "The work is queued as a task.", body = Processing)))]
pub async fn process(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Process>,
) -> Result<impl IntoResponse, ApiError> {
    let kind = body.kind.unwrap_or_else(|| "process".to_owned());
    let request = pb::CreateTaskRequest {
        title: body.title.unwrap_or_else(|| format!("process {kind}")),
        kind,
        payload_json: json_text(body.payload),
        user_id: submitter(&caller, None)?,
        ..pb::CreateTaskRequest::default()
    };
    let response = state
        .tasks()
        .create_task(state.ask(request))
        .await?
        .into_inner();
    let task = response.task.ok_or_else(missing_task)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Processing {
            task_id: task.id,
            status: "processing",
        }),
    ))
}

/// Answer of `POST /api/process`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Processing {
    /// The task that does the work.
    task_id: String,
    /// Always `processing`.
    status: &'static str,
}

/// The view of the task a service answered with; an answer without one is an internal error.
pub fn task_view(task: Option<pb::Task>) -> Result<TaskView, ApiError> {
    task.map(TaskView::from).ok_or_else(missing_task)
}

fn missing_task() -> ApiError {
    tracing::error!("tasks service answered without a task");
    ApiError::new(swarm_kit::ErrorCode::Internal, "internal error")
}

//! Schedule routes: cron schedules that create a task on each tick (create, list, read,
//! change, delete, pause, resume). A client reaches only its own schedules, and their tasks
//! are its own.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_kit::time::rfc3339;
use swarm_proto::tasks::v1 as pb;
use utoipa::ToSchema;

use super::tasks::{CreateTask, creation};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::model::{PageQuery, PageView, SchedulePath, raw_json};
use crate::schema;
use crate::state::AppState;

/// Body of `POST /api/schedules`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    #[schema(schema_with = schema::name)]
    name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[schema(example = "0 9 * * MON-FRI")]
    cron: String,
    /// An IANA time zone; default `UTC`.
    #[schema(example = "Europe/Paris")]
    timezone: Option<String>,
    /// What each tick creates, as `POST /api/tasks` takes it (without `run_at`,
    /// `delay_seconds` or `depends_on`).
    task: CreateTask,
    /// Whether it starts paused; default false.
    paused: Option<bool>,
}

/// Body of `PATCH /api/schedules/{id}`: any of the creation's fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[schema(schema_with = schema::name)]
    name: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    task: Option<CreateTask>,
    paused: Option<bool>,
}

/// What each tick of a schedule creates.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledTaskView {
    title: String,
    kind: String,
    #[schema(value_type = serde_json::Value)]
    payload: Box<RawValue>,
    priority: i32,
    required_capabilities: Vec<String>,
    agent_id: Option<String>,
    user_id: Option<String>,
    max_attempts: Option<i32>,
    timeout_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_timeout_seconds: Option<i32>,
}

/// A schedule as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    id: String,
    name: String,
    cron: String,
    timezone: String,
    task: Option<ScheduledTaskView>,
    paused: bool,
    /// The next tick (none when the expression names no future time).
    next_run_at: Option<String>,
    /// The last tick that created a task.
    last_run_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<pb::Schedule> for ScheduleView {
    fn from(schedule: pb::Schedule) -> Self {
        Self {
            task: schedule.task.map(|task| ScheduledTaskView {
                title: task.title,
                kind: task.kind,
                payload: raw_json(task.payload_json),
                priority: task.priority,
                required_capabilities: task.required_capabilities,
                agent_id: task.agent_id,
                user_id: task.user_id,
                max_attempts: task.max_attempts,
                timeout_seconds: task.timeout_seconds,
                execution_timeout_seconds: task.execution_timeout_seconds,
            }),
            id: schedule.id,
            name: schedule.name,
            cron: schedule.cron,
            timezone: schedule.timezone,
            paused: schedule.paused,
            next_run_at: schedule.next_run_at.as_ref().map(rfc3339),
            last_run_at: schedule.last_run_at.as_ref().map(rfc3339),
            created_at: schedule.created_at.as_ref().map(rfc3339),
            updated_at: schedule.updated_at.as_ref().map(rfc3339),
        }
    }
}

/// Turns a schedule's task into the tasks service's form, for `caller`.
fn scheduled_task(caller: &Caller, task: CreateTask) -> Result<pb::CreateTaskRequest, ApiError> {
    creation(caller, task).map_err(|error| error.within("task"))
}

/// Creates a schedule: 201, 400 for a bad expression or zone, 409 for a taken name.
#[utoipa::path(post, operation_id = "createSchedule", path = "/api/schedules", tag = "schedules", request_body = CreateSchedule,
    responses((status = 201, description = "The schedule, with its first tick.", body = ScheduleView)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateSchedule>,
) -> Result<(StatusCode, axum::Json<ScheduleView>), ApiError> {
    let request = pb::CreateScheduleRequest {
        name: body.name,
        cron: body.cron,
        timezone: body.timezone.unwrap_or_default(),
        task: Some(scheduled_task(&caller, body.task)?),
        paused: body.paused.unwrap_or(false),
    };
    let schedule = state
        .tasks()
        .create_schedule(state.ask(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(schedule.into())))
}

/// Lists schedules, newest first.
#[utoipa::path(get, operation_id = "listSchedules", path = "/api/schedules", tag = "schedules", params(PageQuery),
    responses((status = 200, description = "A page of schedules.", body = PageView<ScheduleView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<PageView<ScheduleView>>, ApiError> {
    let request = pb::ListSchedulesRequest {
        user_id: caller.client_user().map(str::to_owned),
        page: Some(page.to_proto()?),
    };
    let answer = state.tasks().list_schedules(state.ask(request)).await?;
    Ok(PageView::listed(answer, ScheduleView::from))
}

/// Returns one schedule.
#[utoipa::path(get, operation_id = "getSchedule", path = "/api/schedules/{id}", tag = "schedules", params(SchedulePath),
    responses((status = 200, description = "The schedule.", body = ScheduleView)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    Ok(axum::Json(reachable(&state, &caller, id).await?.into()))
}

/// Reads a schedule the caller may reach, as if others did not exist.
async fn reachable(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<pb::Schedule, ApiError> {
    let schedule = state
        .tasks()
        .get_schedule(state.ask(pb::GetScheduleRequest { id }))
        .await?
        .into_inner();
    let owner = schedule
        .task
        .as_ref()
        .and_then(|task| task.user_id.as_deref());
    caller.check_owner(owner, "schedule", &schedule.id)?;
    Ok(schedule)
}

/// Changes any of a schedule's fields; a new expression or zone starts from the next tick.
#[utoipa::path(patch, operation_id = "updateSchedule", path = "/api/schedules/{id}", tag = "schedules", params(SchedulePath), request_body = UpdateSchedule,
    responses((status = 200, description = "The schedule, changed.", body = ScheduleView)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<UpdateSchedule>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let request = pb::UpdateScheduleRequest {
        id,
        name: body.name,
        cron: body.cron,
        timezone: body.timezone,
        task: body
            .task
            .map(|task| scheduled_task(&caller, task))
            .transpose()?,
        paused: body.paused,
    };
    changed(&state, &caller, request).await
}

/// Sends a change of a schedule the caller may reach.
async fn changed(
    state: &AppState,
    caller: &Caller,
    request: pb::UpdateScheduleRequest,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    reachable(state, caller, request.id.clone()).await?;
    let schedule = state
        .tasks()
        .update_schedule(state.ask(request))
        .await?
        .into_inner();
    Ok(axum::Json(schedule.into()))
}

/// Pauses a schedule: no tick fires until it is resumed.
#[utoipa::path(post, operation_id = "pauseSchedule", path = "/api/schedules/{id}/pause", tag = "schedules", params(SchedulePath),
    responses((status = 200, description = "The schedule, paused.", body = ScheduleView)))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    changed(&state, &caller, paused(id, true)).await
}

/// Resumes a schedule from the next tick; ticks that passed while it was paused do not fire.
#[utoipa::path(post, operation_id = "resumeSchedule", path = "/api/schedules/{id}/resume", tag = "schedules", params(SchedulePath),
    responses((status = 200, description = "The schedule, running.", body = ScheduleView)))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    changed(&state, &caller, paused(id, false)).await
}

fn paused(id: String, paused: bool) -> pb::UpdateScheduleRequest {
    pb::UpdateScheduleRequest {
        id,
        paused: Some(paused),
        ..pb::UpdateScheduleRequest::default()
    }
}

/// Deletes a schedule: 204. The tasks it created stay.
#[utoipa::path(delete, operation_id = "deleteSchedule", path = "/api/schedules/{id}", tag = "schedules", params(SchedulePath),
    responses((status = 204, description = "Deleted; the tasks it created stay.")))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    reachable(&state, &caller, id.clone()).await?;
    state
        .tasks()
        .delete_schedule(state.ask(pb::DeleteScheduleRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

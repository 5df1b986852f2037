//! Agent work routes, the REST twins of the worker gRPC calls: claim tasks, then report on a
//! held task (progress, completion, failure, or an ending that claims the next tasks in the
//! same call). Every report names the agent that holds the task (and, optionally, the
//! attempt's lease); an agent key may only name its own agent.

use std::time::Duration;

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_proto::tasks::v1 as pb;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Json;
use crate::limits::MAX_CLAIM_WAIT;
use crate::model::{TaskPath, TaskView, json_text};
use crate::routes::tasks::{path_task_and_caller, task_view};
use crate::schema;
use crate::state::AppState;
use crate::workers::{self, Report};

/// Body of `POST /api/tasks/claim`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTasks {
    #[schema(format = Uuid)]
    agent_id: String,
    #[schema(minimum = 1, maximum = 100)]
    max_tasks: Option<u32>,
    #[schema(maximum = 60)]
    wait_seconds: Option<u32>,
}

/// Answer of `POST /api/tasks/claim`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    tasks: Vec<TaskView>,
}

/// Claims tasks for an agent, long-polling up to `wait_seconds`.
#[utoipa::path(post, operation_id = "claimTasks", path = "/api/tasks/claim", tag = "agent work", request_body = ClaimTasks,
    responses((status = 200, description = "The tasks claimed, now active under a lease; empty when none came within the wait.", body = Claimed)))]
pub async fn claim(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<ClaimTasks>,
) -> Result<axum::Json<Claimed>, ApiError> {
    caller.check_agent(&body.agent_id)?;
    let wait_seconds = body.wait_seconds.unwrap_or(0);
    if u64::from(wait_seconds) > MAX_CLAIM_WAIT.as_secs() {
        return Err(ApiError::invalid(format!(
            "wait_seconds must be between 0 and {}",
            MAX_CLAIM_WAIT.as_secs()
        )));
    }
    let request = pb::ClaimTasksRequest {
        agent_id: body.agent_id,
        max_tasks: body.max_tasks.unwrap_or(1),
        wait_seconds,
    };
    if request.max_tasks == 0 {
        return Err(ApiError::invalid("max_tasks must be between 1 and 100"));
    }
    let wait = Duration::from_secs(u64::from(wait_seconds));
    let response = state
        .tasks
        .clone()
        .claim_tasks(state.call(request, wait))
        .await?
        .into_inner();
    let tasks = response.tasks.into_iter().map(TaskView::from).collect();
    Ok(axum::Json(Claimed { tasks }))
}

/// Body of `POST /api/tasks/{id}/progress`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportProgress {
    #[schema(format = Uuid)]
    agent_id: String,
    #[schema(format = Uuid)]
    lease_id: Option<String>,
    #[schema(minimum = 0, maximum = 100)]
    percent: i32,
    #[schema(schema_with = schema::progress_note)]
    message: Option<String>,
}

/// Reports progress on a held task and renews its lease.
#[utoipa::path(post, operation_id = "reportProgress", path = "/api/tasks/{id}/progress", tag = "agent work", params(TaskPath), request_body = ReportProgress,
    responses((status = 200, description = "The task, its lease renewed.", body = TaskView)))]
pub async fn progress(
    report: HeldReport<ReportProgress>,
) -> Result<axum::Json<TaskView>, ApiError> {
    report.send().await
}

/// Body of `POST /api/tasks/{id}/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    #[schema(format = Uuid)]
    agent_id: String,
    #[schema(format = Uuid)]
    lease_id: Option<String>,
    #[schema(value_type = Option<serde_json::Value>)]
    result: Option<Box<RawValue>>,
}

/// Completes a held task.
#[utoipa::path(post, operation_id = "completeTask", path = "/api/tasks/{id}/complete", tag = "agent work", params(TaskPath), request_body = CompleteTask,
    responses((status = 200, description = "The task, completed.", body = TaskView)))]
pub async fn complete(report: HeldReport<CompleteTask>) -> Result<axum::Json<TaskView>, ApiError> {
    report.send().await
}

/// Body of `POST /api/tasks/{id}/fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    #[schema(format = Uuid)]
    agent_id: String,
    #[schema(format = Uuid)]
    lease_id: Option<String>,
    #[schema(schema_with = schema::failure)]
    error: String,
    retryable: Option<bool>,
}

/// Fails a held task: requeued with backoff while attempts remain, else `failed`.
#[utoipa::path(post, operation_id = "failTask", path = "/api/tasks/{id}/fail", tag = "agent work", params(TaskPath), request_body = FailTask,
    responses((status = 200, description = "The task: queued again with backoff while attempts remain, else failed.", body = TaskView)))]
pub async fn fail(report: HeldReport<FailTask>) -> Result<axum::Json<TaskView>, ApiError> {
    report.send().await
}

/// Body of `POST /api/tasks/{id}/finish`: how the attempt ended (exactly one of `complete`
/// and `fail`), and how many tasks to claim next.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishTask {
    #[schema(format = Uuid)]
    agent_id: String,
    #[schema(format = Uuid)]
    lease_id: Option<String>,
    complete: Option<Completed>,
    fail: Option<Failed>,
    /// How many tasks to claim for the agent once the outcome is stored, without waiting
    /// (default 0).
    #[schema(minimum = 0, maximum = 100)]
    claim_next: Option<u32>,
}

/// The attempt completed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completed {
    #[schema(value_type = Option<serde_json::Value>)]
    result: Option<Box<RawValue>>,
}

/// The attempt failed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    #[schema(schema_with = schema::failure)]
    error: String,
    retryable: Option<bool>,
}

/// Answer of `POST /api/tasks/{id}/finish`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Finished {
    /// The task as the outcome left it.
    task: TaskView,
    /// The tasks claimed next, now active under a lease; empty when none was ready.
    claimed: Vec<TaskView>,
}

/// Completes or fails a held task, then claims up to `claim_next` tasks for the agent without
/// waiting, so the slot it freed takes its next task in the same round trip. The outcome is
/// answered as `complete` and `fail` answer it; a claim that cannot run leaves `claimed` empty.
#[utoipa::path(post, operation_id = "finishTask", path = "/api/tasks/{id}/finish", tag = "agent work", params(TaskPath), request_body = FinishTask,
    responses((status = 200, description = "The finished task and the tasks claimed next.", body = Finished)))]
pub async fn finish(report: HeldReport<FinishTask>) -> Result<axum::Json<Finished>, ApiError> {
    use pb::finish_task_request::Outcome;
    let HeldReport {
        state,
        caller,
        task_id,
        body,
    } = report;
    caller.check_agent(&body.agent_id)?;
    let lease = Some(attempt(body.agent_id, body.lease_id));
    let outcome = match (body.complete, body.fail) {
        (Some(completed), None) => Outcome::Complete(pb::CompleteTaskRequest {
            id: task_id,
            lease,
            result_json: json_text(completed.result),
        }),
        (None, Some(failed)) => Outcome::Fail(pb::FailTaskRequest {
            id: task_id,
            lease,
            error: failed.error,
            retryable: failed.retryable,
        }),
        _ => {
            return Err(ApiError::invalid(
                "exactly one of complete and fail is required",
            ));
        }
    };
    let request = pb::FinishTaskRequest {
        outcome: Some(outcome),
        claim_next: body.claim_next.unwrap_or(0),
    };
    let answer = state
        .tasks
        .clone()
        .finish_task(state.ask(request))
        .await?
        .into_inner();
    Ok(axum::Json(Finished {
        task: task_view(answer.task)?,
        claimed: answer.claimed.into_iter().map(TaskView::from).collect(),
    }))
}

/// The body of a report on a held task.
pub trait ReportBody: DeserializeOwned + Send {
    /// Splits the body into the attempt it names and the report on task `id`.
    fn into_report(self, id: String) -> (pb::LeaseRef, Report);
}

impl ReportBody for ReportProgress {
    fn into_report(self, id: String) -> (pb::LeaseRef, Report) {
        let report = pb::ReportProgressRequest {
            id,
            lease: None,
            percent: self.percent,
            message: self.message,
        };
        (
            attempt(self.agent_id, self.lease_id),
            Report::Progress(report),
        )
    }
}

impl ReportBody for CompleteTask {
    fn into_report(self, id: String) -> (pb::LeaseRef, Report) {
        let report = pb::CompleteTaskRequest {
            id,
            lease: None,
            result_json: json_text(self.result),
        };
        (
            attempt(self.agent_id, self.lease_id),
            Report::Complete(report),
        )
    }
}

impl ReportBody for FailTask {
    fn into_report(self, id: String) -> (pb::LeaseRef, Report) {
        let report = pb::FailTaskRequest {
            id,
            lease: None,
            error: self.error,
            retryable: self.retryable,
        };
        (attempt(self.agent_id, self.lease_id), Report::Fail(report))
    }
}

fn attempt(agent_id: String, lease_id: Option<String>) -> pb::LeaseRef {
    pb::LeaseRef { agent_id, lease_id }
}

/// A report on a held task as a handler takes it: who calls, the task the path names, and the
/// body.
pub struct HeldReport<B> {
    state: AppState,
    caller: Caller,
    task_id: String,
    body: B,
}

impl<B: ReportBody> HeldReport<B> {
    /// Sends the report, refusing an agent key that names another agent, and answers the task
    /// as it is afterwards.
    async fn send(self) -> Result<axum::Json<TaskView>, ApiError> {
        let (lease, mut report) = self.body.into_report(self.task_id);
        self.caller.check_agent(&lease.agent_id)?;
        *report.lease_mut() = Some(lease);
        let task = workers::report(&self.state, report).await?;
        Ok(axum::Json(task.into()))
    }
}

impl<B: DeserializeOwned + Send> FromRequest<AppState> for HeldReport<B> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let (task_id, caller) = path_task_and_caller(&mut parts, state).await?;
        let Json(body) = Json::<B>::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self {
            state: state.clone(),
            caller,
            task_id,
            body,
        })
    }
}

//! Workflow routes: submit a graph of tasks in one call, read one with its tasks, list them,
//! and cancel one whole. A client reaches only its own workflows.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_kit::time::rfc3339;
use swarm_proto::tasks::v1 as pb;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::tasks::{CreateTask, creation, submitter};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::model::{PageView, TaskView, WorkflowPath, not_one_of, page_request};
use crate::schema::{self, WORKFLOW_STATUSES};
use crate::state::AppState;

/// One task of `POST /api/workflows`: a key and the fields `POST /api/tasks` takes, whose
/// `depends_on` names keys of the workflow's tasks. The fields are kept as the JSON text they
/// came in and read as a task body once the key is out: serde cannot hand a flattened body a
/// payload kept as it was sent, nor refuse a flattened body's unknown fields.
#[derive(Debug)]
pub struct WorkflowTask {
    /// Unique within the workflow.
    key: String,
    /// The other fields, as one JSON object.
    fields: String,
}

impl<'de> Deserialize<'de> for WorkflowTask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(WorkflowTaskVisitor)
    }
}

/// Reads a workflow task's object: its key, and every other field as it was sent.
struct WorkflowTaskVisitor;

impl<'de> Visitor<'de> for WorkflowTaskVisitor {
    type Value = WorkflowTask;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a task object with a `key`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WorkflowTask, A::Error> {
        let mut key = None;
        let mut fields = String::from("{");
        while let Some(name) = map.next_key::<String>()? {
            if name == "key" {
                if key.is_some() {
                    return Err(de::Error::duplicate_field("key"));
                }
                key = Some(map.next_value::<String>()?);
                continue;
            }
            let value = map.next_value::<Box<RawValue>>()?;
            if fields.len() > 1 {
                fields.push(',');
            }
            fields.push_str(&serde_json::to_string(&name).map_err(de::Error::custom)?);
            fields.push(':');
            fields.push_str(value.get());
        }
        fields.push('}');
        let key = key.ok_or_else(|| de::Error::missing_field("key"))?;
        Ok(WorkflowTask { key, fields })
    }
}

/// Its schema is the task creation's, with the key beside its fields (one object, as the
/// body is one object, rather than an `allOf` that no extra property could satisfy).
impl PartialSchema for WorkflowTask {
    fn schema() -> RefOr<Schema> {
        let mut fields = match CreateTask::schema() {
            RefOr::T(Schema::Object(fields)) => fields,
            _ => Object::new(),
        };
        fields.description = Some(
            "A task of the workflow: its key, and the fields `POST /api/tasks` takes, whose \
             `depends_on` names keys of the workflow's tasks."
                .to_owned(),
        );
        fields
            .properties
            .insert("key".to_owned(), schema::name().into());
        fields.required.push("key".to_owned());
        RefOr::T(Schema::Object(fields))
    }
}

impl ToSchema for WorkflowTask {}

/// Body of `POST /api/workflows`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    #[schema(schema_with = schema::name)]
    name: String,
    /// On whose behalf; a client key's own user.
    #[schema(schema_with = schema::name)]
    user_id: Option<String>,
    /// 1 to 1000 tasks; `depends_on` must name keys among them and form no cycle.
    #[schema(min_items = 1, max_items = 1000)]
    tasks: Vec<WorkflowTask>,
}

/// A workflow as REST clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    id: String,
    name: String,
    user_id: Option<String>,
    /// `running`, `completed` (every task did), `failed` (one failed for good) or `cancelled`.
    status: &'static str,
    /// Its tasks by key; left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<BTreeMap<String, TaskView>>,
    /// The keys each task waits for, by key (tasks that wait for none left out); left out of
    /// lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    dependencies: Option<BTreeMap<String, Vec<String>>>,
    created_at: Option<String>,
    updated_at: Option<String>,
    finished_at: Option<String>,
}

impl WorkflowView {
    fn of(workflow: pb::Workflow, with_tasks: bool) -> Self {
        let status = workflow_status_name(workflow.status());
        Self {
            status,
            id: workflow.id,
            name: workflow.name,
            user_id: workflow.user_id,
            dependencies: with_tasks.then(|| {
                let mut waits: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for edge in &workflow.dependencies {
                    waits
                        .entry(edge.key.clone())
                        .or_default()
                        .push(edge.depends_on.clone());
                }
                waits
            }),
            tasks: with_tasks.then(|| {
                workflow
                    .tasks
                    .into_iter()
                    .map(|(key, task)| (key, task.into()))
                    .collect()
            }),
            created_at: workflow.created_at.as_ref().map(rfc3339),
            updated_at: workflow.updated_at.as_ref().map(rfc3339),
            finished_at: workflow.finished_at.as_ref().map(rfc3339),
        }
    }
}

/// Workflow statuses by REST name.
const STATUSES: [(&str, pb::WorkflowStatus); 4] = [
    ("running", pb::WorkflowStatus::Running),
    ("completed", pb::WorkflowStatus::Completed),
    ("failed", pb::WorkflowStatus::Failed),
    ("cancelled", pb::WorkflowStatus::Cancelled),
];

fn workflow_status_name(status: pb::WorkflowStatus) -> &'static str {
    STATUSES
        .iter()
        .find(|(_, known)| *known == status)
        .map_or("unknown", |(name, _)| name)
}

/// Creates a workflow and all its tasks in one transaction: 201, or 400 naming a duplicate or
/// unknown key or a cycle (nothing created).
#[utoipa::path(post, operation_id = "createWorkflow", path = "/api/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, description = "The workflow with its tasks.", body = WorkflowView)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateWorkflow>,
) -> Result<(StatusCode, axum::Json<WorkflowView>), ApiError> {
    let user_id = submitter(&caller, body.user_id)?;
    let tasks = body
        .tasks
        .into_iter()
        .enumerate()
        .map(|(index, step)| {
            let fields: CreateTask = serde_json::from_str(&step.fields).map_err(|error| {
                // The position would point into the text rebuilt here, not the one sent.
                let error = error.to_string();
                let reason = error
                    .rsplit_once(" at line ")
                    .map_or(&*error, |(reason, _)| reason);
                ApiError::invalid(format!("invalid json body: tasks[{index}]: {reason}"))
            })?;
            let mut task = creation(&caller, fields)
                .map_err(|error| error.within(&format!("tasks[{index}]")))?;
            let depends_on = std::mem::take(&mut task.depends_on);
            Ok(pb::WorkflowStep {
                key: step.key,
                task: Some(task),
                depends_on,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let request = pb::CreateWorkflowRequest {
        name: body.name,
        user_id,
        tasks,
    };
    let workflow = state
        .tasks()
        .create_workflow(state.ask(request))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        axum::Json(WorkflowView::of(workflow, true)),
    ))
}

/// Returns one workflow with its tasks.
#[utoipa::path(get, operation_id = "getWorkflow", path = "/api/workflows/{id}", tag = "workflows", params(WorkflowPath),
    responses((status = 200, description = "The workflow with its tasks.", body = WorkflowView)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<WorkflowView>, ApiError> {
    let workflow = reachable(&state, &caller, id).await?;
    Ok(axum::Json(WorkflowView::of(workflow, true)))
}

/// Reads a workflow the caller may reach, as if others did not exist.
async fn reachable(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<pb::Workflow, ApiError> {
    let workflow = state
        .tasks()
        .get_workflow(state.ask(pb::GetWorkflowRequest { id }))
        .await?
        .into_inner();
    caller.check_owner(workflow.user_id.as_deref(), "workflow", &workflow.id)?;
    Ok(workflow)
}

/// Query of `GET /api/workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWorkflows {
    /// Only workflows in this status.
    #[param(schema_with = schema::workflow_status)]
    status: Option<String>,
    /// From 1; default 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists workflows (without their tasks), newest first.
#[utoipa::path(get, operation_id = "listWorkflows", path = "/api/workflows", tag = "workflows", params(ListWorkflows),
    responses((status = 200, description = "A page of workflows, without their tasks.", body = PageView<WorkflowView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListWorkflows>,
) -> Result<axum::Json<PageView<WorkflowView>>, ApiError> {
    let status = match query.status.as_deref() {
        None => pb::WorkflowStatus::Unspecified,
        Some(name) => STATUSES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, status)| *status)
            .ok_or_else(|| not_one_of("status", &WORKFLOW_STATUSES, name))?,
    };
    let request = pb::ListWorkflowsRequest {
        status: status.into(),
        user_id: caller.client_user().map(str::to_owned),
        page: Some(page_request(query.page, query.per_page)?),
    };
    let answer = state.tasks().list_workflows(state.ask(request)).await?;
    Ok(PageView::listed(answer, |workflow| {
        WorkflowView::of(workflow, false)
    }))
}

/// Cancels every unfinished task of a running workflow; a finished one answers 409.
#[utoipa::path(post, operation_id = "cancelWorkflow", path = "/api/workflows/{id}/cancel", tag = "workflows", params(WorkflowPath),
    responses((status = 200, description = "The workflow, cancelled, with its tasks.", body = WorkflowView)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<WorkflowView>, ApiError> {
    reachable(&state, &caller, id.clone()).await?;
    let workflow = state
        .tasks()
        .cancel_workflow(state.ask(pb::CancelWorkflowRequest { id }))
        .await?
        .into_inner();
    Ok(axum::Json(WorkflowView::of(workflow, true)))
}

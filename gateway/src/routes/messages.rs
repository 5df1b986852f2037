//! Message routes: add to a task's conversation, read it, and read recent messages everywhere.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use swarm_proto::tasks::v1 as pb;

use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::model::{MessageView, PageQuery, PageView, TaskPath, role_from_name};
use crate::routes::tasks::VisibleTask;
use crate::schema;
use crate::state::AppState;

/// Body of `POST /api/tasks/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMessage {
    #[schema(schema_with = schema::name)]
    sender: String,
    #[schema(schema_with = schema::message_role)]
    role: Option<String>,
    #[schema(schema_with = schema::message_content)]
    content: String,
}

/// Adds a message to a task: 201 with the message.
#[utoipa::path(post, operation_id = "addMessage", path = "/api/tasks/{id}/messages", tag = "messages", params(TaskPath), request_body = AddMessage,
    responses((status = 201, description = "The message.", body = MessageView)))]
pub async fn add(
    State(state): State<AppState>,
    task: VisibleTask,
    Json(body): Json<AddMessage>,
) -> Result<(StatusCode, axum::Json<MessageView>), ApiError> {
    let role = body.role.as_deref().map(role_from_name).transpose()?;
    let request = pb::AddMessageRequest {
        task_id: task.id,
        sender: body.sender,
        role: role.unwrap_or(pb::MessageRole::User).into(),
        content: body.content,
    };
    let message = state
        .tasks()
        .add_message(state.ask(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(message.into())))
}

/// Lists one task's messages, oldest first.
#[utoipa::path(get, operation_id = "listTaskMessages", path = "/api/tasks/{id}/messages", tag = "messages", params(TaskPath, PageQuery),
    responses((status = 200, description = "A page of the task's messages, oldest first.", body = PageView<MessageView>)))]
pub async fn list_for_task(
    State(state): State<AppState>,
    task: VisibleTask,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<PageView<MessageView>>, ApiError> {
    list(
        &state,
        pb::ListMessagesRequest {
            task_id: Some(task.id),
            page: Some(page.to_proto()?),
            user_id: None,
        },
    )
    .await
}

/// Lists recent messages across tasks (a client's: across its own tasks), newest first.
#[utoipa::path(get, operation_id = "listMessages", path = "/api/messages", tag = "messages", params(PageQuery),
    responses((status = 200, description = "A page of recent messages, newest first.", body = PageView<MessageView>)))]
pub async fn list_recent(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<PageView<MessageView>>, ApiError> {
    list(
        &state,
        pb::ListMessagesRequest {
            task_id: None,
            page: Some(page.to_proto()?),
            user_id: caller.client_user().map(str::to_owned),
        },
    )
    .await
}

async fn list(
    state: &AppState,
    request: pb::ListMessagesRequest,
) -> Result<axum::Json<PageView<MessageView>>, ApiError> {
    let answer = state.tasks().list_messages(state.ask(request)).await?;
    Ok(PageView::listed(answer, MessageView::from))
}

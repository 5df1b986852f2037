//! The `swarm.tasks.v1.TaskService` gRPC surface: converts protobuf to domain values, calls the
//! queue, and converts back. No rules live here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use swarm_kit::page::Page;
use swarm_kit::time::{millis_from_timestamp, timestamp_from_millis};
use swarm_kit::validate::InvalidInput;
use swarm_kit::validate::parse_uuid;
use swarm_proto::tasks::v1 as pb;
use swarm_proto::tasks::v1::task_service_server::TaskService;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{
    Attempt, AttemptOutcome, Dispatcher, Ending, IdempotencyKey, LeaseRef, Message, MessageRole,
    MessageScope, NewMessage, NewSchedule, NewTask, NewWorkflow, Schedule, ScheduleUpdate,
    Scheduler, Task, TaskFilter, TaskQueue, TaskStatus, Workflow, WorkflowFilter, WorkflowGraph,
    WorkflowStatus, WorkflowStep,
};

/// The gRPC handler of the tasks service.
#[derive(Debug, Clone)]
pub struct TaskGrpc {
    queue: Arc<TaskQueue>,
    dispatcher: Dispatcher,
    scheduler: Arc<Scheduler>,
}

impl TaskGrpc {
    /// Serves `queue` and `scheduler` over gRPC, with claims going through `dispatcher`.
    pub fn new(queue: Arc<TaskQueue>, dispatcher: Dispatcher, scheduler: Arc<Scheduler>) -> Self {
        Self {
            queue,
            dispatcher,
            scheduler,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskGrpc {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let task = new_task_from_proto(request.into_inner())?;
        let (task, created) = self.queue.create(task).await?;
        Ok(Response::new(pb::CreateTaskResponse {
            task: Some(task_to_proto(task)),
            created,
        }))
    }

    async fn create_tasks(
        &self,
        request: Request<pb::CreateTasksRequest>,
    ) -> Result<Response<pb::CreateTasksResponse>, Status> {
        let tasks = request
            .into_inner()
            .tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                new_task_from_proto(task).map_err(|status| {
                    Status::new(
                        status.code(),
                        format!("tasks[{index}].{}", status.message()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tasks = self.queue.create_many(tasks).await?;
        Ok(Response::new(pb::CreateTasksResponse {
            tasks: tasks.into_iter().map(task_to_proto).collect(),
        }))
    }

    async fn create_workflow(
        &self,
        request: Request<pb::CreateWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let request = request.into_inner();
        let steps = request
            .tasks
            .into_iter()
            .enumerate()
            .map(|(index, step)| {
                let task =
                    new_task_from_proto(step.task.unwrap_or_default()).map_err(|status| {
                        Status::new(
                            status.code(),
                            format!("tasks[{index}].{}", status.message()),
                        )
                    })?;
                Ok(WorkflowStep {
                    key: step.key,
                    task: NewTask {
                        depends_on: Vec::new(),
                        ..task
                    },
                    depends_on: step.depends_on,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let workflow = NewWorkflow {
            name: request.name,
            user_id: request.user_id,
            steps,
        };
        let graph = self.queue.create_workflow(workflow).await?;
        Ok(Response::new(graph_to_proto(graph)))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(graph_to_proto(
            self.queue.workflow(id).await?,
        )))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let request = request.into_inner();
        let page = Page::from_proto(request.page)?;
        let status = match pb::WorkflowStatus::try_from(request.status) {
            Ok(pb::WorkflowStatus::Unspecified) => None,
            Ok(known) => WorkflowStatus::ALL
                .into_iter()
                .find(|status| workflow_status_to_proto(*status) == known),
            Err(_) => {
                let unknown = format!("unknown workflow status {}", request.status);
                return Err(InvalidInput::new(unknown).into());
            }
        };
        let filter = WorkflowFilter {
            status,
            user_id: request.user_id,
        };
        let (workflows, total) = self.queue.list_workflows(&filter, page).await?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: workflows.into_iter().map(workflow_to_proto).collect(),
            page: Some(page.info(total)),
        }))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(graph_to_proto(
            self.queue.cancel_workflow(id).await?,
        )))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let request = request.into_inner();
        let schedule = NewSchedule {
            name: request.name,
            cron: request.cron,
            timezone: request.timezone,
            task: schedule_task(request.task)?,
            paused: request.paused,
        };
        let schedule = self.scheduler.create(schedule).await?;
        Ok(Response::new(schedule_to_proto(schedule)))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(schedule_to_proto(
            self.scheduler.get(id).await?,
        )))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let request = request.into_inner();
        let page = Page::from_proto(request.page)?;
        let (schedules, total) = self
            .scheduler
            .list(request.user_id.as_deref(), page)
            .await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.into_iter().map(schedule_to_proto).collect(),
            page: Some(page.info(total)),
        }))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id)?;
        let update = ScheduleUpdate {
            name: request.name,
            cron: request.cron,
            timezone: request.timezone,
            task: request
                .task
                .map(|task| schedule_task(Some(task)))
                .transpose()?,
            paused: request.paused,
        };
        let schedule = self.scheduler.update(id, update).await?;
        Ok(Response::new(schedule_to_proto(schedule)))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        self.scheduler.delete(id).await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(task_to_proto(self.queue.get(id).await?)))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let request = request.into_inner();
        let page = Page::from_proto(request.page)?;
        let filter = TaskFilter {
            status: status_from_proto(request.status)?,
            agent_id: request
                .agent_id
                .as_deref()
                .map(|id| parse_uuid("agent_id", id))
                .transpose()?,
            user_id: request.user_id,
            kind: request.kind,
            title_contains: request.title_contains,
        };
        let (tasks, total) = self.queue.list(&filter, page).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(task_to_proto).collect(),
            page: Some(page.info(total)),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(task_to_proto(self.queue.cancel(id).await?)))
    }

    async fn retry_task(
        &self,
        request: Request<pb::RetryTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(task_to_proto(self.queue.retry(id).await?)))
    }

    async fn list_attempts(
        &self,
        request: Request<pb::ListAttemptsRequest>,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id)?;
        let page = Page::from_proto(request.page)?;
        let (attempts, total) = self.queue.attempts(id, page).await?;
        Ok(Response::new(pb::ListAttemptsResponse {
            attempts: attempts.into_iter().map(attempt_to_proto).collect(),
            page: Some(page.info(total)),
        }))
    }

    async fn claim_tasks(
        &self,
        request: Request<pb::ClaimTasksRequest>,
    ) -> Result<Response<pb::ClaimTasksResponse>, Status> {
        let request = request.into_inner();
        let agent_id = parse_uuid("agent_id", &request.agent_id)?;
        let wait = Duration::from_secs(u64::from(request.wait_seconds));
        let tasks = self
            .dispatcher
            .claim(agent_id, request.max_tasks.max(1), wait)
            .await?;
        Ok(Response::new(pb::ClaimTasksResponse {
            tasks: tasks.into_iter().map(task_to_proto).collect(),
        }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id)?;
        let lease = lease_from_proto(request.lease)?;
        let task = self
            .queue
            .progress(id, lease, request.percent, request.message)
            .await?;
        Ok(Response::new(task_to_proto(task)))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let (id, lease, ending) = completion_from_proto(request.into_inner())?;
        let task = self.queue.finish(id, lease, ending).await?;
        Ok(Response::new(task_to_proto(task)))
    }

    async fn fail_task(
        &self,
        request: Request<pb::FailTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let (id, lease, ending) = failure_from_proto(request.into_inner())?;
        let task = self.queue.finish(id, lease, ending).await?;
        Ok(Response::new(task_to_proto(task)))
    }

    async fn finish_task(
        &self,
        request: Request<pb::FinishTaskRequest>,
    ) -> Result<Response<pb::FinishTaskResponse>, Status> {
        use pb::finish_task_request::Outcome;
        let request = request.into_inner();
        let (id, lease, ending) = match request.outcome {
            Some(Outcome::Complete(completion)) => completion_from_proto(completion)?,
            Some(Outcome::Fail(failure)) => failure_from_proto(failure)?,
            None => return Err(InvalidInput::new("outcome is required: complete or fail").into()),
        };
        let (task, claimed) = self
            .dispatcher
            .finish(id, lease, ending, request.claim_next)
            .await?;
        Ok(Response::new(pb::FinishTaskResponse {
            task: Some(task_to_proto(task)),
            claimed: claimed.into_iter().map(task_to_proto).collect(),
        }))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        let states = self.queue.watch(id).await?;
        let events = ReceiverStream::new(states).map(|state| {
            state
                .map(|task| pb::TaskEvent {
                    task: Some(task_to_proto(std::sync::Arc::unwrap_or_clone(task))),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn sync_held_tasks(
        &self,
        request: Request<pb::SyncHeldTasksRequest>,
    ) -> Result<Response<pb::SyncHeldTasksResponse>, Status> {
        let request = request.into_inner();
        let agent_id = parse_uuid("agent_id", &request.agent_id)?;
        let listed = request
            .active_tasks
            .iter()
            .map(|id| parse_uuid("active_tasks", id))
            .collect::<Result<Vec<_>, _>>()?;
        let synced = self.queue.sync_held(agent_id, &listed).await?;
        let ids = |ids: Vec<uuid::Uuid>| ids.iter().map(uuid::Uuid::to_string).collect();
        Ok(Response::new(pb::SyncHeldTasksResponse {
            cancelled: ids(synced.cancelled),
            released: ids(synced.released),
        }))
    }

    async fn add_message(
        &self,
        request: Request<pb::AddMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let request = request.into_inner();
        let message = NewMessage {
            task_id: parse_uuid("task_id", &request.task_id)?,
            sender: request.sender,
            role: role_from_proto(request.role)?,
            content: request.content,
        };
        Ok(Response::new(message_to_proto(
            self.queue.add_message(message).await?,
        )))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let request = request.into_inner();
        let page = Page::from_proto(request.page)?;
        let scope = match request.task_id.as_deref() {
            Some(id) => MessageScope::Task(parse_uuid("task_id", id)?),
            None => MessageScope::Recent {
                user_id: request.user_id,
            },
        };
        let (messages, total) = self.queue.list_messages(scope, page).await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.into_iter().map(message_to_proto).collect(),
            page: Some(page.info(total)),
        }))
    }

    async fn count_active_tasks(
        &self,
        request: Request<pb::CountActiveTasksRequest>,
    ) -> Result<Response<pb::CountActiveTasksResponse>, Status> {
        let ids = &request.get_ref().agent_ids;
        if ids.len() > 1000 {
            return Err(InvalidInput::new("at most 1000 agent ids").into());
        }
        let ids = ids
            .iter()
            .map(|id| parse_uuid("agent_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let active = self.queue.count_active(&ids).await?;
        Ok(Response::new(pb::CountActiveTasksResponse {
            active: active
                .into_iter()
                .map(|(id, count)| (id.to_string(), count))
                .collect(),
        }))
    }
}

fn new_task_from_proto(request: pb::CreateTaskRequest) -> Result<NewTask, Status> {
    let defaults = NewTask::default();
    Ok(NewTask {
        title: request.title,
        kind: request.kind,
        payload: request.payload_json,
        priority: request.priority,
        required_capabilities: request.required_capabilities,
        pinned_agent_id: request
            .agent_id
            .as_deref()
            .map(|id| parse_uuid("agent_id", id))
            .transpose()?,
        user_id: request.user_id,
        max_attempts: request.max_attempts.unwrap_or(defaults.max_attempts),
        timeout_seconds: request.timeout_seconds.unwrap_or(defaults.timeout_seconds),
        execution_timeout_seconds: request.execution_timeout_seconds,
        idempotency_key: request.idempotency_key.map(|key| IdempotencyKey {
            tenant: request.tenant.clone(),
            key,
        }),
        trace_parent: swarm_kit::trace::traceparent(&tracing::Span::current()),
        run_at: request.run_at.as_ref().map(millis_from_timestamp),
        delay_seconds: request.delay_seconds,
        depends_on: request
            .depends_on
            .iter()
            .map(|id| parse_uuid("depends_on", id))
            .collect::<Result<_, _>>()?,
        after: Vec::new(),
        tenant: Some(request.tenant).filter(|tenant| !tenant.is_empty()),
        workflow_key: None,
        schedule_tick: None,
    })
}

/// Reads a completion: the task, the attempt, and its result.
fn completion_from_proto(
    request: pb::CompleteTaskRequest,
) -> Result<(Uuid, LeaseRef, Ending), Status> {
    let ending = Ending::Completed {
        result: request.result_json,
    };
    Ok((
        parse_uuid("id", &request.id)?,
        lease_from_proto(request.lease)?,
        ending,
    ))
}

/// Reads a failure: the task, the attempt, and what went wrong.
fn failure_from_proto(request: pb::FailTaskRequest) -> Result<(Uuid, LeaseRef, Ending), Status> {
    let ending = Ending::Failed {
        error: request.error,
        retryable: request.retryable.unwrap_or(true),
    };
    Ok((
        parse_uuid("id", &request.id)?,
        lease_from_proto(request.lease)?,
        ending,
    ))
}

fn lease_from_proto(lease: Option<pb::LeaseRef>) -> Result<LeaseRef, Status> {
    let lease = lease.ok_or_else(|| InvalidInput::new("lease is required"))?;
    Ok(LeaseRef {
        agent_id: parse_uuid("agent_id", &lease.agent_id)?,
        lease_id: lease
            .lease_id
            .as_deref()
            .map(|id| parse_uuid("lease_id", id))
            .transpose()?,
    })
}

fn status_from_proto(status: i32) -> Result<Option<TaskStatus>, Status> {
    match pb::TaskStatus::try_from(status) {
        Ok(pb::TaskStatus::Unspecified) => Ok(None),
        Ok(known) => Ok(TaskStatus::ALL
            .into_iter()
            .find(|candidate| status_to_proto(*candidate) == known)),
        Err(_) => Err(InvalidInput::new(format!("unknown task status {status}")).into()),
    }
}

fn status_to_proto(status: TaskStatus) -> pb::TaskStatus {
    match status {
        TaskStatus::Waiting => pb::TaskStatus::Waiting,
        TaskStatus::Scheduled => pb::TaskStatus::Scheduled,
        TaskStatus::Queued => pb::TaskStatus::Queued,
        TaskStatus::Active => pb::TaskStatus::Active,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Failed => pb::TaskStatus::Failed,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

/// Reads the task a schedule creates; it is required.
fn schedule_task(task: Option<pb::CreateTaskRequest>) -> Result<NewTask, Status> {
    let task = task.ok_or_else(|| InvalidInput::new("task is required"))?;
    new_task_from_proto(task)
        .map_err(|status| Status::new(status.code(), format!("task.{}", status.message())))
}

fn schedule_to_proto(schedule: Schedule) -> pb::Schedule {
    let template = schedule.task;
    pb::Schedule {
        id: schedule.id.to_string(),
        name: schedule.name,
        cron: schedule.cron,
        timezone: schedule.timezone,
        task: Some(pb::CreateTaskRequest {
            title: template.title,
            kind: template.kind,
            payload_json: template.payload,
            priority: template.priority,
            required_capabilities: template.required_capabilities,
            agent_id: template.pinned_agent_id.map(|id| id.to_string()),
            user_id: schedule.user_id,
            max_attempts: Some(template.max_attempts),
            timeout_seconds: Some(template.timeout_seconds),
            execution_timeout_seconds: template.execution_timeout_seconds,
            ..pb::CreateTaskRequest::default()
        }),
        paused: schedule.paused,
        next_run_at: Some(schedule.next_run_at)
            .filter(|next| *next != i64::MAX)
            .map(timestamp_from_millis),
        last_run_at: schedule.last_run_at.map(timestamp_from_millis),
        created_at: Some(timestamp_from_millis(schedule.created_at)),
        updated_at: Some(timestamp_from_millis(schedule.updated_at)),
    }
}

fn workflow_status_to_proto(status: WorkflowStatus) -> pb::WorkflowStatus {
    match status {
        WorkflowStatus::Running => pb::WorkflowStatus::Running,
        WorkflowStatus::Completed => pb::WorkflowStatus::Completed,
        WorkflowStatus::Failed => pb::WorkflowStatus::Failed,
        WorkflowStatus::Cancelled => pb::WorkflowStatus::Cancelled,
    }
}

/// A workflow as lists show it: without its tasks and edges.
fn workflow_to_proto(workflow: Workflow) -> pb::Workflow {
    pb::Workflow {
        id: workflow.id.to_string(),
        name: workflow.name,
        user_id: workflow.user_id,
        status: workflow_status_to_proto(workflow.status).into(),
        created_at: Some(timestamp_from_millis(workflow.created_at)),
        updated_at: Some(timestamp_from_millis(workflow.updated_at)),
        finished_at: workflow.finished_at.map(timestamp_from_millis),
        ..pb::Workflow::default()
    }
}

/// A workflow with its tasks by key and its edges.
fn graph_to_proto(graph: WorkflowGraph) -> pb::Workflow {
    pb::Workflow {
        tasks: graph
            .tasks
            .into_iter()
            .map(|task| {
                (
                    task.workflow_key.clone().unwrap_or_default(),
                    task_to_proto(task),
                )
            })
            .collect(),
        dependencies: graph
            .dependencies
            .into_iter()
            .map(|(key, depends_on)| pb::WorkflowDependency { key, depends_on })
            .collect(),
        ..workflow_to_proto(graph.workflow)
    }
}

fn attempt_to_proto(attempt: Attempt) -> pb::Attempt {
    let outcome = match attempt.outcome {
        AttemptOutcome::Running => pb::AttemptOutcome::Running,
        AttemptOutcome::Completed => pb::AttemptOutcome::Completed,
        AttemptOutcome::Failed => pb::AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired => pb::AttemptOutcome::LeaseExpired,
        AttemptOutcome::AgentLost => pb::AttemptOutcome::AgentLost,
        AttemptOutcome::Cancelled => pb::AttemptOutcome::Cancelled,
        AttemptOutcome::TimedOut => pb::AttemptOutcome::TimedOut,
    };
    pb::Attempt {
        attempt: attempt.attempt,
        agent_id: attempt.agent_id.map(|id| id.to_string()),
        started_at: Some(timestamp_from_millis(attempt.started_at)),
        finished_at: attempt.finished_at.map(timestamp_from_millis),
        outcome: outcome.into(),
        error: attempt.error,
    }
}

fn role_from_proto(role: i32) -> Result<MessageRole, Status> {
    match pb::MessageRole::try_from(role) {
        Ok(pb::MessageRole::Unspecified | pb::MessageRole::User) => Ok(MessageRole::User),
        Ok(pb::MessageRole::Agent) => Ok(MessageRole::Agent),
        Ok(pb::MessageRole::System) => Ok(MessageRole::System),
        Err(_) => Err(InvalidInput::new(format!("unknown message role {role}")).into()),
    }
}

fn role_to_proto(role: MessageRole) -> pb::MessageRole {
    match role {
        MessageRole::User => pb::MessageRole::User,
        MessageRole::Agent => pb::MessageRole::Agent,
        MessageRole::System => pb::MessageRole::System,
    }
}

/// Converts a stored task to its protobuf form.
pub fn task_to_proto(task: Task) -> pb::Task {
    let active = task.status == TaskStatus::Active;
    pb::Task {
        id: task.id.to_string(),
        title: task.title,
        kind: task.kind,
        payload_json: task.payload,
        status: status_to_proto(task.status).into(),
        priority: task.priority,
        required_capabilities: task.required_capabilities,
        agent_id: task.agent_id.map(|id| id.to_string()),
        pinned_agent_id: task.pinned_agent_id.map(|id| id.to_string()),
        user_id: task.user_id,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        timeout_seconds: task.timeout_seconds,
        execution_timeout_seconds: task.execution_timeout_seconds,
        progress: Some(pb::Progress {
            percent: task.progress_percent,
            message: task.progress_message,
        }),
        result_json: task.result,
        error: task.error,
        lease_id: task.lease_id.filter(|_| active).map(|id| id.to_string()),
        lease_expires_at: task.lease_expires_at.map(timestamp_from_millis),
        available_at: Some(timestamp_from_millis(task.available_at)),
        created_at: Some(timestamp_from_millis(task.created_at)),
        updated_at: Some(timestamp_from_millis(task.updated_at)),
        started_at: task.started_at.map(timestamp_from_millis),
        finished_at: task.finished_at.map(timestamp_from_millis),
        idempotency_key: task
            .idempotency_key
            .as_deref()
            .map(|stored| IdempotencyKey::client_part(stored).to_owned()),
        dependency_results_json: task
            .dependency_results
            .into_iter()
            .map(|(id, result)| (id.to_string(), result.unwrap_or_else(|| "null".to_owned())))
            .collect(),
        workflow_id: task.workflow_id.map(|id| id.to_string()),
        schedule_id: task.schedule_id.map(|id| id.to_string()),
    }
}

fn message_to_proto(message: Message) -> pb::Message {
    pb::Message {
        id: message.id.to_string(),
        task_id: message.task_id.to_string(),
        sender: message.sender,
        role: role_to_proto(message.role).into(),
        content: message.content,
        created_at: Some(timestamp_from_millis(message.created_at)),
    }
}

//! The worker calls over gRPC (`swarm.worker.v1.WorkerService`), answered on the gateway's own
//! address beside REST: each call is identified by its API key, acts only for the key's agent
//! (an admin key names the agent), reaches only the tasks that agent holds, and goes on to the
//! tasks or agents service with the service token, which workers never see.

use std::time::Duration;

use swarm_kit::ErrorCode;
use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;
use swarm_proto::worker::v1 as pb;
use swarm_proto::worker::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::tasks::check_visible;
use crate::state::AppState;

/// Adds the worker service's routes to `router`, after (so outside) the REST layers.
pub fn serve_beside(router: axum::Router, state: AppState) -> axum::Router {
    use tonic::server::NamedService;
    type Server = WorkerServiceServer<WorkerGrpc>;
    router.route_service(
        &format!("/{}/{{*method}}", Server::NAME),
        Server::new(WorkerGrpc { state }),
    )
}

/// The gateway's worker service.
#[derive(Debug, Clone)]
struct WorkerGrpc {
    state: AppState,
}

fn status(error: ApiError) -> Status {
    error.0.into()
}

/// Answers with what a service answered, without its transport metadata (its compression
/// and other headers belong to the hop between gateway and service, not to the worker's).
fn answer<T>(forwarded: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
    forwarded.map(|response| Response::new(response.into_inner()))
}

impl WorkerGrpc {
    /// Identifies the caller of a worker call: an agent or admin key within its rate.
    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let auth = &self.state.auth;
        let caller = auth
            .identify(&metadata.clone().into_headers())
            .await
            .map_err(status)?;
        if caller.role == Role::Client {
            return Err(Status::permission_denied(
                "a client key may not call the worker service",
            ));
        }
        auth.limit(&caller).map_err(|wait| {
            Status::resource_exhausted(format!(
                "rate limit reached; retry in {} s",
                wait.as_secs_f64().ceil().max(1.0)
            ))
        })?;
        Ok(caller)
    }

    /// Returns the agent a call acts for: the one it names, which an agent key must own, or
    /// the key's own agent when it names none.
    async fn acting_for(&self, metadata: &MetadataMap, named: &str) -> Result<String, Status> {
        let caller = self.caller(metadata).await?;
        if named.is_empty() {
            return caller
                .agent_id
                .map(|id| id.to_string())
                .ok_or_else(|| Status::invalid_argument("agent_id is required with an admin key"));
        }
        caller.check_agent(named).map_err(status)?;
        Ok(named.to_owned())
    }

    /// Refuses a call about a task its caller's agent does not hold.
    async fn check_task(&self, metadata: &MetadataMap, task_id: &str) -> Result<(), Status> {
        let caller = self.caller(metadata).await?;
        check_visible(&self.state, &caller, task_id)
            .await
            .map_err(status)
    }

    /// Names the attempt a report is about, for the agent the caller acts for.
    async fn lease(
        &self,
        metadata: &MetadataMap,
        lease: Option<tasks_pb::LeaseRef>,
    ) -> Result<Option<tasks_pb::LeaseRef>, Status> {
        let lease = lease.unwrap_or_default();
        let agent_id = self.acting_for(metadata, &lease.agent_id).await?;
        Ok(Some(tasks_pb::LeaseRef {
            agent_id,
            lease_id: lease.lease_id,
        }))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    async fn join(
        &self,
        request: Request<agents_pb::RegisterAgentRequest>,
    ) -> Result<Response<agents_pb::Agent>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let declared = request.into_inner();
        let state = &self.state;
        let Some(own) = caller.agent_id.filter(|_| caller.role == Role::Agent) else {
            return answer(
                state
                    .agents
                    .clone()
                    .register_agent(state.call(declared, Duration::ZERO))
                    .await,
            );
        };
        let update = agents_pb::UpdateAgentRequest {
            id: own.to_string(),
            kind: Some(declared.kind).filter(|kind| !kind.is_empty()),
            capabilities: Some(agents_pb::CapabilityList {
                values: declared.capabilities,
            }),
            max_concurrency: declared.max_concurrency,
            ..agents_pb::UpdateAgentRequest::default()
        };
        answer(
            state
                .agents
                .clone()
                .update_agent(state.call(update, Duration::ZERO))
                .await,
        )
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let agent_id = self
            .acting_for(request.metadata(), &request.get_ref().agent_id)
            .await?;
        let held = request.into_inner().held.map(|held| held.task_ids);
        let (agent, cancel) = crate::workers::heartbeat(&self.state, agent_id, held).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            agent: Some(agent),
            cancel,
        }))
    }

    async fn claim_tasks(
        &self,
        request: Request<tasks_pb::ClaimTasksRequest>,
    ) -> Result<Response<tasks_pb::ClaimTasksResponse>, Status> {
        let agent_id = self
            .acting_for(request.metadata(), &request.get_ref().agent_id)
            .await?;
        let claim = tasks_pb::ClaimTasksRequest {
            agent_id,
            ..request.into_inner()
        };
        let wait = Duration::from_secs(u64::from(claim.wait_seconds));
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .claim_tasks(state.call(claim, wait))
                .await,
        )
    }

    async fn report_progress(
        &self,
        request: Request<tasks_pb::ReportProgressRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let lease = self
            .lease(request.metadata(), request.get_ref().lease.clone())
            .await?;
        let report = tasks_pb::ReportProgressRequest {
            lease,
            ..request.into_inner()
        };
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .report_progress(state.call(report, Duration::ZERO))
                .await,
        )
    }

    async fn complete_task(
        &self,
        request: Request<tasks_pb::CompleteTaskRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let lease = self
            .lease(request.metadata(), request.get_ref().lease.clone())
            .await?;
        let report = tasks_pb::CompleteTaskRequest {
            lease,
            ..request.into_inner()
        };
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .complete_task(state.call(report, Duration::ZERO))
                .await,
        )
    }

    async fn fail_task(
        &self,
        request: Request<tasks_pb::FailTaskRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let lease = self
            .lease(request.metadata(), request.get_ref().lease.clone())
            .await?;
        let report = tasks_pb::FailTaskRequest {
            lease,
            ..request.into_inner()
        };
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .fail_task(state.call(report, Duration::ZERO))
                .await,
        )
    }

    async fn add_message(
        &self,
        request: Request<tasks_pb::AddMessageRequest>,
    ) -> Result<Response<tasks_pb::Message>, Status> {
        self.check_task(request.metadata(), &request.get_ref().task_id)
            .await?;
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .add_message(state.call(request.into_inner(), Duration::ZERO))
                .await,
        )
    }

    async fn list_messages(
        &self,
        request: Request<tasks_pb::ListMessagesRequest>,
    ) -> Result<Response<tasks_pb::ListMessagesResponse>, Status> {
        let Some(task_id) = request.get_ref().task_id.clone() else {
            return Err(
                ApiError::new(ErrorCode::InvalidArgument, "task_id is required")
                    .0
                    .into(),
            );
        };
        self.check_task(request.metadata(), &task_id).await?;
        let state = &self.state;
        answer(
            state
                .tasks
                .clone()
                .list_messages(state.call(request.into_inner(), Duration::ZERO))
                .await,
        )
    }

    type WatchTaskStream = tonic::Streaming<tasks_pb::TaskEvent>;

    async fn watch_task(
        &self,
        request: Request<tasks_pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        self.check_task(request.metadata(), &request.get_ref().id)
            .await?;
        // A watch lasts as long as the task runs: no deadline.
        answer(
            self.state
                .tasks
                .clone()
                .watch_task(request.into_inner())
                .await,
        )
    }
}

//! The worker calls over gRPC (`swarm.worker.v1.WorkerService`), answered on the gateway's own
//! address beside REST: each call is identified by its API key, acts only for the key's agent
//! (an admin key names the agent), reaches only the tasks that agent holds, and goes on to the
//! tasks or agents service with the service token, which workers never see.

use std::time::Duration;

use futures_util::StreamExt;

use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;
use swarm_proto::worker::v1 as pb;
use swarm_proto::worker::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::tasks::{check_visible, followed};
use crate::state::AppState;
use crate::workers::{self, Report};

/// Adds the worker service's routes, and server reflection (v1 and v1alpha) listing it, to
/// `router`, after (so outside) the REST layers. The services behind the gateway stay unlisted:
/// workers reach only the worker service.
pub fn serve_beside(router: axum::Router, state: AppState) -> axum::Router {
    use tonic::server::NamedService;
    let (reflection, reflection_v1alpha) =
        swarm_kit::grpc::reflection(&[WorkerServiceServer::<WorkerGrpc>::NAME])
            .expect("the compiled-in descriptor sets are well formed");
    let router = grpc_route(router, WorkerServiceServer::new(WorkerGrpc { state }));
    let router = grpc_route(router, reflection);
    grpc_route(router, reflection_v1alpha)
}

/// Routes every method of gRPC service `service` on `router`.
fn grpc_route<S>(router: axum::Router, service: S) -> axum::Router
where
    S: tonic::server::NamedService
        + tower::Service<
            axum::http::Request<axum::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    router.route_service(&format!("/{}/{{*method}}", S::NAME), service)
}

/// A task's changes as the worker service streams them.
type TaskEvents =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<tasks_pb::TaskEvent, Status>> + Send>>;

/// The gateway's worker service.
#[derive(Debug, Clone)]
struct WorkerGrpc {
    state: AppState,
}

fn status(error: ApiError) -> Status {
    error.0.into()
}

/// Words a service's refusal as REST callers get it (see [`swarm_kit::Error::from_status`]):
/// a service that refused the gateway's service token has not refused the worker's key.
fn downstream(refusal: Status) -> Status {
    swarm_kit::Error::from_status(&refusal).into()
}

/// Answers with what a service answered, without its transport metadata (its compression
/// and other headers belong to the hop between gateway and service, not to the worker's).
fn answer<T>(forwarded: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
    forwarded
        .map(|response| Response::new(response.into_inner()))
        .map_err(downstream)
}

impl WorkerGrpc {
    /// Identifies the caller of a worker call: an agent or admin key within its rate.
    async fn caller(&self, metadata: MetadataMap) -> Result<Caller, Status> {
        let auth = &self.state.auth;
        let caller = auth
            .identify(&metadata.into_headers())
            .await
            .map_err(status)?;
        if caller.role == Role::Client {
            return Err(Status::permission_denied(
                "a client key may not call the worker service",
            ));
        }
        auth.limit(&caller)
            .map_err(|limited| status(limited.error()))?;
        Ok(caller)
    }

    /// Returns the agent a call acts for: the one it names, which an agent key must own, or
    /// the key's own agent when it names none.
    async fn acting_for(&self, metadata: MetadataMap, named: &str) -> Result<String, Status> {
        let caller = self.caller(metadata).await?;
        if named.is_empty() {
            return caller.agent_id.map(|id| id.to_string()).ok_or_else(|| {
                status(ApiError::invalid("agent_id is required with an admin key"))
            });
        }
        caller.check_agent(named).map_err(status)?;
        Ok(named.to_owned())
    }

    /// Makes `lease` name the agent the caller acts for (refusing another agent's).
    async fn lease_for_caller(
        &self,
        metadata: MetadataMap,
        lease: &mut Option<tasks_pb::LeaseRef>,
    ) -> Result<(), Status> {
        let lease = lease.get_or_insert_default();
        lease.agent_id = self.acting_for(metadata, &lease.agent_id).await?;
        Ok(())
    }

    /// Sends a report on a held task once its lease names the agent the caller acts for.
    async fn report(
        &self,
        metadata: MetadataMap,
        mut report: Report,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        self.lease_for_caller(metadata, report.lease_mut()).await?;
        Ok(Response::new(
            workers::report(&self.state, report)
                .await
                .map_err(downstream)?,
        ))
    }

    /// Refuses a call about a task its caller's agent does not hold; returns the caller.
    async fn check_task(&self, metadata: MetadataMap, task_id: &str) -> Result<Caller, Status> {
        let caller = self.caller(metadata).await?;
        check_visible(&self.state, &caller, task_id)
            .await
            .map_err(status)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    async fn join(
        &self,
        request: Request<agents_pb::RegisterAgentRequest>,
    ) -> Result<Response<agents_pb::Agent>, Status> {
        let (metadata, _, declared) = request.into_parts();
        let caller = self.caller(metadata).await?;
        Ok(Response::new(
            workers::join(&self.state, &caller, declared)
                .await
                .map_err(downstream)?,
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (metadata, _, beat) = request.into_parts();
        let agent_id = self.acting_for(metadata, &beat.agent_id).await?;
        let active_tasks = beat.active_tasks.map(|held| held.ids);
        let (agent, cancel) = crate::workers::heartbeat(&self.state, agent_id, active_tasks)
            .await
            .map_err(downstream)?;
        Ok(Response::new(pb::HeartbeatResponse {
            agent: Some(agent),
            cancel,
        }))
    }

    async fn claim_tasks(
        &self,
        request: Request<tasks_pb::ClaimTasksRequest>,
    ) -> Result<Response<tasks_pb::ClaimTasksResponse>, Status> {
        let (metadata, _, mut claim) = request.into_parts();
        claim.agent_id = self.acting_for(metadata, &claim.agent_id).await?;
        let wait = Duration::from_secs(u64::from(claim.wait_seconds));
        let request = self.state.call(claim, wait);
        answer(self.state.tasks.clone().claim_tasks(request).await)
    }

    async fn report_progress(
        &self,
        request: Request<tasks_pb::ReportProgressRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let (metadata, _, report) = request.into_parts();
        self.report(metadata, Report::Progress(report)).await
    }

    async fn complete_task(
        &self,
        request: Request<tasks_pb::CompleteTaskRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let (metadata, _, report) = request.into_parts();
        self.report(metadata, Report::Complete(report)).await
    }

    async fn fail_task(
        &self,
        request: Request<tasks_pb::FailTaskRequest>,
    ) -> Result<Response<tasks_pb::Task>, Status> {
        let (metadata, _, report) = request.into_parts();
        self.report(metadata, Report::Fail(report)).await
    }

    async fn finish_task(
        &self,
        request: Request<tasks_pb::FinishTaskRequest>,
    ) -> Result<Response<tasks_pb::FinishTaskResponse>, Status> {
        let (metadata, _, mut finish) = request.into_parts();
        let Some(lease) = workers::finish_lease(&mut finish) else {
            self.caller(metadata).await?;
            return Err(status(ApiError::invalid(
                "outcome is required: complete or fail",
            )));
        };
        self.lease_for_caller(metadata, lease).await?;
        answer(
            self.state
                .tasks
                .clone()
                .finish_task(self.state.ask(finish))
                .await,
        )
    }

    async fn add_message(
        &self,
        request: Request<tasks_pb::AddMessageRequest>,
    ) -> Result<Response<tasks_pb::Message>, Status> {
        let (metadata, _, message) = request.into_parts();
        self.check_task(metadata, &message.task_id).await?;
        answer(
            self.state
                .tasks
                .clone()
                .add_message(self.state.ask(message))
                .await,
        )
    }

    async fn list_messages(
        &self,
        request: Request<tasks_pb::ListMessagesRequest>,
    ) -> Result<Response<tasks_pb::ListMessagesResponse>, Status> {
        let (metadata, _, list) = request.into_parts();
        let Some(task_id) = &list.task_id else {
            return Err(status(ApiError::invalid("task_id is required")));
        };
        self.check_task(metadata, task_id).await?;
        answer(
            self.state
                .tasks
                .clone()
                .list_messages(self.state.ask(list))
                .await,
        )
    }

    type WatchTaskStream = TaskEvents;

    async fn watch_task(
        &self,
        request: Request<tasks_pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let (metadata, _, watch) = request.into_parts();
        let caller = self.check_task(metadata, &watch.id).await?;
        let slot = self.state.streams.take(caller.key_id).map_err(status)?;
        // A watch lasts as long as the task runs (no deadline), or until the gateway stops.
        let events = self
            .state
            .tasks
            .clone()
            .watch_task(watch)
            .await
            .map_err(downstream)?;
        let stopping = self.state.shutdown.clone();
        let events = followed(caller, events.into_inner())
            .map(|change| change.map_err(downstream))
            .take_until(async move { stopping.cancelled().await });
        Ok(Response::new(Box::pin(slot.hold(events))))
    }
}

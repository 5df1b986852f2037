//! The worker calls that REST and the worker gRPC service share: a heartbeat records the
//! agent's sign of life with the agents service and, when the agent lists the tasks it holds,
//! squares them with the tasks service (renewing their leases, taking back what it was handed
//! but never got, and naming what was cancelled); a report on a held task goes to the tasks
//! service once its lease names the caller's agent.

use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;

use crate::auth::{Caller, Role};
use crate::fleet;
use crate::state::AppState;

/// Registers the agent a worker declares, or resumes it when it exists, taking on the declared
/// kind, capabilities, config and concurrency. An agent key resumes its own agent, whatever
/// name the worker declares.
pub async fn join(
    state: &AppState,
    caller: &Caller,
    declared: agents_pb::RegisterAgentRequest,
) -> Result<agents_pb::Agent, tonic::Status> {
    let name = match caller.agent_id.filter(|_| caller.role == Role::Agent) {
        Some(own) => {
            let request = agents_pb::GetAgentRequest {
                id: own.to_string(),
            };
            state
                .agents()
                .get_agent(state.ask(request))
                .await?
                .into_inner()
                .name
        }
        None => declared.name,
    };
    let join = agents_pb::RegisterAgentRequest {
        name,
        resume: true,
        ..declared
    };
    let agent = state
        .agents()
        .register_agent(state.ask(join))
        .await?
        .into_inner();
    Ok(fleet::one(state, agent).await)
}

/// Records a heartbeat of `agent_id`; with `active_tasks` (the ids of the tasks it works
/// on), squares them with the queue. Returns the agent and the held tasks that were cancelled.
pub async fn heartbeat(
    state: &AppState,
    agent_id: String,
    active_tasks: Option<Vec<String>>,
) -> Result<(agents_pb::Agent, Vec<String>), tonic::Status> {
    let agent = state
        .agents()
        .heartbeat(state.ask(agents_pb::HeartbeatRequest {
            id: agent_id.clone(),
        }))
        .await?
        .into_inner();
    let Some(active_tasks) = active_tasks else {
        return Ok((fleet::one(state, agent).await, Vec::new()));
    };
    let synced = state
        .tasks()
        .sync_held_tasks(state.ask(tasks_pb::SyncHeldTasksRequest {
            agent_id,
            active_tasks,
        }))
        .await?
        .into_inner();
    Ok((fleet::one(state, agent).await, synced.cancelled))
}

/// A report on a held task, its lease already checked to name the caller's agent.
#[derive(Debug)]
pub enum Report {
    /// Progress, which renews the lease.
    Progress(tasks_pb::ReportProgressRequest),
    /// The result.
    Complete(tasks_pb::CompleteTaskRequest),
    /// The failure.
    Fail(tasks_pb::FailTaskRequest),
}

impl Report {
    /// The lease the report names.
    pub fn lease_mut(&mut self) -> &mut Option<tasks_pb::LeaseRef> {
        match self {
            Self::Progress(progress) => &mut progress.lease,
            Self::Complete(completion) => &mut completion.lease,
            Self::Fail(failure) => &mut failure.lease,
        }
    }
}

/// The lease a finish (an ending and the next claim) names; `None` when it names no ending.
pub fn finish_lease(
    finish: &mut tasks_pb::FinishTaskRequest,
) -> Option<&mut Option<tasks_pb::LeaseRef>> {
    use tasks_pb::finish_task_request::Outcome;
    match finish.outcome.as_mut()? {
        Outcome::Complete(completion) => Some(&mut completion.lease),
        Outcome::Fail(failure) => Some(&mut failure.lease),
    }
}

/// Sends `report` to the tasks service and returns the task as it is afterwards.
pub async fn report(state: &AppState, report: Report) -> Result<tasks_pb::Task, tonic::Status> {
    let mut tasks = state.tasks.clone();
    let answered = match report {
        Report::Progress(progress) => tasks.report_progress(state.ask(progress)).await,
        Report::Complete(completion) => tasks.complete_task(state.ask(completion)).await,
        Report::Fail(failure) => tasks.fail_task(state.ask(failure)).await,
    };
    answered.map(tonic::Response::into_inner)
}

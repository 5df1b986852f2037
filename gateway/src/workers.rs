//! What the worker calls do at the gateway beyond forwarding one service call: a heartbeat
//! records the agent's sign of life with the agents service and, when the agent lists the
//! tasks it holds, squares them with the tasks service (renewing their leases, taking back
//! what it was handed but never got, and naming what was cancelled).

use std::time::Duration;

use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;

use crate::state::AppState;

/// Records a heartbeat of `agent_id`; with `active_tasks` (the ids of the tasks it works
/// on), squares them with the queue. Returns the agent and the held tasks that were cancelled.
pub async fn heartbeat(
    state: &AppState,
    agent_id: String,
    active_tasks: Option<Vec<String>>,
) -> Result<(agents_pb::Agent, Vec<String>), tonic::Status> {
    let agent = state
        .agents
        .clone()
        .heartbeat(state.call(
            agents_pb::HeartbeatRequest {
                id: agent_id.clone(),
            },
            Duration::ZERO,
        ))
        .await?
        .into_inner();
    let Some(active_tasks) = active_tasks else {
        return Ok((agent, Vec::new()));
    };
    let synced = state
        .tasks
        .clone()
        .sync_held_tasks(state.call(
            tasks_pb::SyncHeldTasksRequest {
                agent_id,
                active_tasks,
            },
            Duration::ZERO,
        ))
        .await?
        .into_inner();
    Ok((agent, synced.cancelled))
}

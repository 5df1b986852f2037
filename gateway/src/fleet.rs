//! Agents as operators see them. The agents service knows each agent's record and whether it is
//! alive (its heartbeats); the tasks service knows what each holds. Neither calls the other for
//! it: the gateway joins the two, marking an alive agent that holds as many tasks as its
//! concurrency `busy`.

use std::collections::HashMap;

use swarm_kit::page::Page;
use swarm_proto::agents::v1 as pb;
use swarm_proto::common::v1::PageInfo;
use swarm_proto::tasks::v1 as tasks_pb;
use tracing::warn;

use crate::state::AppState;

/// The most agents one count request to the tasks service names.
const COUNT_BATCH: usize = 1000;

/// Returns `agent` with its load.
pub async fn one(state: &AppState, agent: pb::Agent) -> pb::Agent {
    let mut agents = with_load(state, vec![agent]).await;
    agents.pop().unwrap_or_default()
}

/// Returns `agents` with the tasks each holds, the alive ones at their concurrency `busy`.
/// When the tasks service cannot count, they keep what the agents service said (alive agents
/// show as idle) and a warning says why.
pub async fn with_load(state: &AppState, mut agents: Vec<pb::Agent>) -> Vec<pb::Agent> {
    let ids: Vec<String> = agents.iter().map(|agent| agent.id.clone()).collect();
    let counts = active_tasks(state, ids).await;
    for agent in &mut agents {
        let active = counts.get(&agent.id).copied().unwrap_or(0);
        agent.active_tasks = i32::try_from(active).unwrap_or(i32::MAX);
        if agent.status() == pb::AgentStatus::Idle && agent.active_tasks >= agent.max_concurrency {
            agent.set_status(pb::AgentStatus::Busy);
        }
    }
    agents
}

/// Lists agents with their load: a page of those in `status` (any when unspecified) that have
/// `capability`. Idle and busy depend on the counts, so for them every alive agent is read and
/// the page is cut here.
pub async fn list(
    state: &AppState,
    status: pb::AgentStatus,
    capability: Option<String>,
    page: Page,
) -> Result<(Vec<pb::Agent>, Option<PageInfo>), tonic::Status> {
    let by_load = matches!(status, pb::AgentStatus::Idle | pb::AgentStatus::Busy);
    let request = pb::ListAgentsRequest {
        status: status.into(),
        capability,
        page: Some(swarm_proto::common::v1::PageRequest {
            page: page.page,
            per_page: page.per_page,
        }),
        every_match: by_load,
    };
    let listed = state
        .agents()
        .list_agents(state.ask(request))
        .await?
        .into_inner();
    let agents = with_load(state, listed.agents).await;
    if !by_load {
        return Ok((agents, listed.page));
    }
    let matching: Vec<pb::Agent> = agents
        .into_iter()
        .filter(|agent| agent.status() == status)
        .collect();
    let info = page.info(matching.len() as u64);
    let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    let items = matching.into_iter().skip(offset).take(limit).collect();
    Ok((items, Some(info)))
}

/// Asks the tasks service how many tasks each of `agent_ids` holds, a batch at a time.
async fn active_tasks(state: &AppState, agent_ids: Vec<String>) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for batch in agent_ids.chunks(COUNT_BATCH) {
        let request = tasks_pb::CountActiveTasksRequest {
            agent_ids: batch.to_vec(),
        };
        match state.tasks().count_active_tasks(state.ask(request)).await {
            Ok(response) => counts.extend(response.into_inner().active),
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "cannot count active tasks; alive agents show as idle");
                break;
            }
        }
    }
    counts
}

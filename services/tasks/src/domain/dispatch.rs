//! Dispatch by agent: a claim names a registered agent, whose capabilities and concurrency come
//! from the agent registry (the agents service, over gRPC); and liveness: the tasks of agents
//! that are gone or offline return to the queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;
use uuid::Uuid;

use crate::domain::task::MAX_CLAIM;
use crate::domain::{Claim, Ending, LeaseRef, Task, TaskQueue};
use crate::error::TaskError;

/// How many agents one liveness question names: the agents service answers at most 1,000 per
/// call, and smaller questions keep each answer quick however many agents are busy.
pub const LIVENESS_BATCH: usize = 500;

/// What the registry says about an agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentProfile {
    /// What it can do.
    pub capabilities: Vec<String>,
    /// The most tasks it may hold at once.
    pub max_concurrency: u32,
    /// Whether it has sent a heartbeat within its TTL.
    pub online: bool,
}

/// The agent registry, as the task queue needs it.
#[async_trait]
pub trait AgentDirectory: Send + Sync + 'static {
    /// Looks one agent up; `AgentNotFound` when it is not registered.
    async fn profile(&self, agent_id: Uuid) -> Result<AgentProfile, TaskError>;

    /// Returns which of `agent_ids` are registered and online.
    async fn online(&self, agent_ids: &[Uuid]) -> Result<HashSet<Uuid>, TaskError>;
}

/// Claims on behalf of registered agents, and takes tasks back from lost ones.
#[derive(Clone)]
pub struct Dispatcher {
    queue: Arc<TaskQueue>,
    directory: Arc<dyn AgentDirectory>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Dispatches `queue`'s tasks to the agents `directory` knows.
    pub fn new(queue: Arc<TaskQueue>, directory: Arc<dyn AgentDirectory>) -> Self {
        Self { queue, directory }
    }

    /// Claims up to `max_tasks` tasks for a registered, online agent, waiting up to `wait`:
    /// only tasks it is able to do (or pinned to it), never more than its free slots.
    pub async fn claim(
        &self,
        agent_id: Uuid,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Vec<Task>, TaskError> {
        let claim = self.claim_of(agent_id, max_tasks, wait).await?;
        self.queue.claim(claim).await
    }

    /// The claim of a registered, online agent, with what the registry says it can do.
    async fn claim_of(
        &self,
        agent_id: Uuid,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Claim, TaskError> {
        let profile = self.directory.profile(agent_id).await?;
        if !profile.online {
            return Err(TaskError::AgentOffline(agent_id));
        }
        Ok(Claim {
            agent_id,
            capabilities: profile.capabilities,
            max_concurrency: profile.max_concurrency,
            max_tasks,
            wait,
        })
    }

    /// Ends the attempt `lease` names of task `id` as `ending` says, then claims up to
    /// `claim_next` tasks (0 to [`MAX_CLAIM`]) for the lease's agent without waiting, so the
    /// slot the attempt freed takes its next task in the same call. The ending stands whatever
    /// the claim meets: a claim that cannot run (the agent went offline, the registry is out of
    /// reach) is logged and hands out nothing, and the agent's worker claims as usual.
    pub async fn finish(
        &self,
        id: Uuid,
        lease: LeaseRef,
        ending: Ending,
        claim_next: u32,
    ) -> Result<(Task, Vec<Task>), TaskError> {
        if claim_next > MAX_CLAIM {
            return Err(TaskError::Invalid(format!(
                "claim_next must be between 0 and {MAX_CLAIM}"
            )));
        }
        let task = self.queue.finish(id, lease, ending).await?;
        if claim_next == 0 {
            return Ok((task, Vec::new()));
        }
        let agent_id = lease.agent_id;
        let claim_next = async {
            let claim = self.claim_of(agent_id, claim_next, Duration::ZERO).await?;
            self.queue.claim_now(claim).await
        };
        let claimed = claim_next.await.unwrap_or_else(|error| {
            warn!(%agent_id, %error, "claim after a finished task did not run");
            Vec::new()
        });
        Ok((task, claimed))
    }

    /// Returns the tasks of every agent that holds some but is deleted or offline to the
    /// queue, asking the registry about [`LIVENESS_BATCH`] agents at a time. Returns how many
    /// attempts it ended.
    pub async fn requeue_tasks_of_lost_agents(&self) -> Result<usize, TaskError> {
        let holders = self.queue.active_agents().await?;
        let mut ended = 0;
        for batch in holders.chunks(LIVENESS_BATCH) {
            let online = self.directory.online(batch).await?;
            for agent_id in batch.iter().filter(|id| !online.contains(id)) {
                ended += self
                    .queue
                    .requeue_agent_tasks(*agent_id, "agent went offline or was deleted")
                    .await?;
            }
        }
        Ok(ended)
    }
}

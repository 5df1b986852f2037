//! The agent directory over gRPC: asks the agents service (`swarm.agents.v1.AgentService`)
//! about claiming agents, never reading its tables. Profiles of online agents are kept for a
//! short time, so an agent that claims in a loop costs the agents service one lookup per TTL,
//! not one per claim; a profile change reaches claims within that TTL.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use swarm_proto::agents::v1 as pb;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::domain::dispatch::{AgentDirectory, AgentProfile};
use crate::error::TaskError;

/// How long a lookup may take before the agents service counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The most agent profiles kept.
const MAX_CACHED_PROFILES: u64 = 100_000;

/// The agents service, seen as an agent directory.
#[derive(Debug, Clone)]
pub struct GrpcAgentDirectory {
    client: AgentServiceClient<Channel>,
    profiles: Cache<Uuid, AgentProfile>,
}

impl GrpcAgentDirectory {
    /// Builds a lazily connected client of the agents service at `url` that keeps online
    /// agents' profiles for `profile_ttl` (zero: never).
    pub fn new(url: &str, profile_ttl: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        let profiles = Cache::builder()
            .max_capacity(if profile_ttl.is_zero() {
                0
            } else {
                MAX_CACHED_PROFILES
            })
            .time_to_live(profile_ttl.max(Duration::from_millis(1)))
            .build();
        Ok(Self {
            client: AgentServiceClient::new(channel),
            profiles,
        })
    }
}

fn dependency(status: tonic::Status) -> TaskError {
    let mut error = swarm_kit::Error::from_status(&status);
    error.message = format!("agents service: {}", error.message);
    TaskError::Dependency(error)
}

fn profile(agent: &pb::Agent) -> AgentProfile {
    AgentProfile {
        capabilities: agent.capabilities.clone(),
        max_concurrency: agent.max_concurrency.max(1).unsigned_abs(),
        online: agent.status() != pb::AgentStatus::Offline,
    }
}

#[async_trait]
impl AgentDirectory for GrpcAgentDirectory {
    async fn profile(&self, agent_id: Uuid) -> Result<AgentProfile, TaskError> {
        if let Some(cached) = self.profiles.get(&agent_id).await {
            return Ok(cached);
        }
        let request = pb::GetAgentRequest {
            id: agent_id.to_string(),
        };
        match self.client.clone().get_agent(request).await {
            Ok(agent) => {
                let fresh = profile(agent.get_ref());
                // An offline agent may come back with its next heartbeat: ask again next time.
                if fresh.online {
                    self.profiles.insert(agent_id, fresh.clone()).await;
                }
                Ok(fresh)
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(TaskError::AgentNotFound(agent_id))
            }
            Err(status) => Err(dependency(status)),
        }
    }

    async fn online(&self, agent_ids: &[Uuid]) -> Result<HashSet<Uuid>, TaskError> {
        let request = pb::GetAgentsRequest {
            ids: agent_ids.iter().map(Uuid::to_string).collect(),
        };
        let agents = self
            .client
            .clone()
            .get_agents(request)
            .await
            .map_err(dependency)?;
        Ok(agents
            .into_inner()
            .agents
            .iter()
            .filter(|agent| profile(agent).online)
            .filter_map(|agent| agent.id.parse().ok())
            .collect())
    }
}

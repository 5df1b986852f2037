//! The agent directory over gRPC: asks the agents service (`swarm.agents.v1.AgentService`)
//! about claiming agents, never reading its tables. Profiles of online agents are kept in the
//! cache (a near copy in this process, evicted the moment the agents service invalidates the
//! agent) for a short time, so an agent that claims in a loop costs the agents service one
//! lookup per TTL, not one per claim, and a changed or deleted agent is seen at once.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use swarm_kit::cache_client::CacheClient;
use swarm_kit::cache_keys;
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::service_auth::ServiceCredentials;
use swarm_proto::agents::v1 as pb;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use uuid::Uuid;

use crate::domain::dispatch::{AgentDirectory, AgentProfile};
use crate::error::TaskError;

/// How long a lookup may take before the agents service counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The agents service, seen as an agent directory.
#[derive(Debug, Clone)]
pub struct GrpcAgentDirectory {
    client: AgentServiceClient<ServiceChannel>,
    profiles: Option<(CacheClient, Duration)>,
}

impl GrpcAgentDirectory {
    /// Builds a lazily connected client of the agents service at `url`, whose calls carry
    /// `token`.
    pub fn new(url: &str, token: &ServiceCredentials) -> Result<Self, tonic::transport::Error> {
        let channel = swarm_kit::grpc::lazy_channel(url, CALL_TIMEOUT, Some(CALL_TIMEOUT), token)?;
        Ok(Self {
            client: AgentServiceClient::new(channel),
            profiles: None,
        })
    }

    /// Keeps online agents' profiles in `cache` for `ttl`.
    #[must_use]
    pub fn with_cache(mut self, cache: CacheClient, ttl: Duration) -> Self {
        self.profiles = Some((cache, ttl));
        self
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
        if let Some((cache, _)) = &self.profiles
            && let Some(cached) = cache.get(&cache_keys::agent_profile(agent_id)).await
            && let Ok(profile) = serde_json::from_slice(&cached)
        {
            return Ok(profile);
        }
        let request = pb::GetAgentRequest {
            id: agent_id.to_string(),
        };
        match self.client.clone().get_agent(request).await {
            Ok(agent) => {
                let fresh = profile(agent.get_ref());
                // An offline agent may come back with its next heartbeat: ask again next time.
                if fresh.online
                    && let Some((cache, ttl)) = &self.profiles
                    && let Ok(encoded) = serde_json::to_vec(&fresh)
                {
                    cache
                        .set(&cache_keys::agent_profile(agent_id), encoded, *ttl)
                        .await;
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

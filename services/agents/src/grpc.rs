//! The `swarm.agents.v1.AgentService` gRPC surface: converts protobuf to domain values, calls
//! the registry, and converts back. No rules live here.

use swarm_kit::page::Page;
use swarm_kit::time::timestamp_from_millis;
use swarm_kit::validate::InvalidInput;
use swarm_kit::validate::parse_uuid;
use swarm_proto::agents::v1 as pb;
use swarm_proto::agents::v1::agent_service_server::AgentService;
use tonic::{Request, Response, Status};

use crate::domain::{AgentFilter, AgentRegistry, AgentUpdate, AgentView, Liveness, NewAgent};

/// The gRPC handler of the agents service.
#[derive(Debug, Clone)]
pub struct AgentGrpc {
    registry: AgentRegistry,
}

impl AgentGrpc {
    /// Serves `registry` over gRPC.
    pub fn new(registry: AgentRegistry) -> Self {
        Self { registry }
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn register_agent(
        &self,
        request: Request<pb::RegisterAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let request = request.into_inner();
        let agent = NewAgent {
            name: request.name,
            kind: request.kind,
            capabilities: request.capabilities,
            config: request.config_json,
            max_concurrency: request.max_concurrency.unwrap_or(1),
        };
        let agent = if request.resume {
            self.registry.register_or_resume(agent).await?
        } else {
            self.registry.register(agent).await?
        };
        Ok(Response::new(agent_to_proto(agent)))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(agent_to_proto(self.registry.get(id).await?)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let request = request.into_inner();
        let page = Page::from_proto(request.page)?;
        // Idle and busy both read as alive: how busy an agent is, the caller learns elsewhere.
        let liveness = match pb::AgentStatus::try_from(request.status) {
            Ok(pb::AgentStatus::Unspecified) => None,
            Ok(pb::AgentStatus::Idle | pb::AgentStatus::Busy) => Some(Liveness::Online),
            Ok(pb::AgentStatus::Offline) => Some(Liveness::Offline),
            Err(_) => {
                return Err(
                    InvalidInput::new(format!("unknown agent status {}", request.status)).into(),
                );
            }
        };
        let filter = AgentFilter {
            liveness,
            capability: request.capability,
        };
        let page = (!request.every_match).then_some(page);
        let (agents, total) = self.registry.list(&filter, page).await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_iter().map(agent_to_proto).collect(),
            page: page.map(|page| page.info(total)),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<pb::UpdateAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id)?;
        let update = AgentUpdate {
            name: request.name,
            kind: request.kind,
            capabilities: request.capabilities.map(|list| list.values),
            config: request.config_json,
            max_concurrency: request.max_concurrency,
        };
        Ok(Response::new(agent_to_proto(
            self.registry.update(id, update).await?,
        )))
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<pb::DeleteAgentResponse>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        self.registry.delete(id).await?;
        Ok(Response::new(pb::DeleteAgentResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        Ok(Response::new(agent_to_proto(
            self.registry.heartbeat(id).await?,
        )))
    }

    async fn get_agent_config(
        &self,
        request: Request<pb::GetAgentConfigRequest>,
    ) -> Result<Response<pb::AgentConfig>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        let config_json = self.registry.config(id).await?;
        Ok(Response::new(pb::AgentConfig {
            agent_id: id.to_string(),
            config_json,
        }))
    }

    async fn get_agents(
        &self,
        request: Request<pb::GetAgentsRequest>,
    ) -> Result<Response<pb::GetAgentsResponse>, Status> {
        let ids = request
            .get_ref()
            .ids
            .iter()
            .map(|id| parse_uuid("ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let agents = self.registry.get_many(&ids).await?;
        Ok(Response::new(pb::GetAgentsResponse {
            agents: agents.into_iter().map(agent_to_proto).collect(),
        }))
    }
}

fn agent_to_proto(view: AgentView) -> pb::Agent {
    let AgentView { agent, liveness } = view;
    let status = match liveness {
        Liveness::Online => pb::AgentStatus::Idle,
        Liveness::Offline => pb::AgentStatus::Offline,
    };
    pb::Agent {
        id: agent.id.to_string(),
        name: agent.name,
        kind: agent.kind,
        capabilities: agent.capabilities,
        config_json: agent.config,
        status: status.into(),
        max_concurrency: agent.max_concurrency,
        active_tasks: 0,
        last_heartbeat_at: Some(timestamp_from_millis(agent.last_heartbeat_at)),
        created_at: Some(timestamp_from_millis(agent.created_at)),
        updated_at: Some(timestamp_from_millis(agent.updated_at)),
    }
}

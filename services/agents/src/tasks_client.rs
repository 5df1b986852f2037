//! Active task counts over gRPC: asks the tasks service how many tasks agents hold, never
//! reading its tables.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::service_auth::ServiceToken;
use swarm_proto::tasks::v1::CountActiveTasksRequest;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use tracing::warn;
use uuid::Uuid;

use crate::domain::ActiveTaskCounts;

/// How long a count may take before the registry goes without it.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The tasks service, seen as a source of active task counts.
#[derive(Debug, Clone)]
pub struct GrpcTaskCounts {
    client: TaskServiceClient<ServiceChannel>,
}

impl GrpcTaskCounts {
    /// Builds a lazily connected client of the tasks service at `url`, whose calls carry `token`.
    pub fn new(url: &str, token: &ServiceToken) -> Result<Self, tonic::transport::Error> {
        let channel = swarm_kit::grpc::lazy_channel(url, CALL_TIMEOUT, Some(CALL_TIMEOUT), token)?;
        Ok(Self {
            client: TaskServiceClient::new(channel),
        })
    }
}

#[async_trait]
impl ActiveTaskCounts for GrpcTaskCounts {
    async fn active_tasks(&self, agent_ids: &[Uuid]) -> HashMap<Uuid, u32> {
        let request = CountActiveTasksRequest {
            agent_ids: agent_ids.iter().map(Uuid::to_string).collect(),
        };
        match self.client.clone().count_active_tasks(request).await {
            Ok(response) => response
                .into_inner()
                .active
                .into_iter()
                .filter_map(|(id, count)| Some((id.parse().ok()?, count)))
                .collect(),
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "cannot count active tasks; agents show as idle");
                HashMap::new()
            }
        }
    }
}

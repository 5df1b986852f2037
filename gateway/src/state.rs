//! What every handler shares: gRPC clients of the services (lazy connections, reused across
//! requests), the configuration, and the process CPU meter.

use std::sync::Arc;
use std::time::Duration;

use swarm_kit::config::ConfigError;
use swarm_kit::grpc::{MAX_MESSAGE_BYTES, ServiceChannel};
use swarm_kit::process::CpuMeter;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use swarm_proto::cache::v1::cache_service_client::CacheServiceClient;
use swarm_proto::metrics::v1::metrics_service_client::MetricsServiceClient;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::streams::StreamSlots;

/// How long the gateway waits to open a connection to a service before calling it unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A service the gateway talks to, by name.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `tasks`, `agents`, `cache` or `metrics`.
    pub name: &'static str,
    /// A lazily connected channel to it.
    pub channel: ServiceChannel,
}

/// Shared handler state: one allocation that every request shares (cloning it is a reference
/// count, not a copy of its clients and caches).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    /// The tasks service.
    pub tasks: TaskServiceClient<ServiceChannel>,
    /// The agents service.
    pub agents: AgentServiceClient<ServiceChannel>,
    /// The cache service.
    pub cache: CacheServiceClient<ServiceChannel>,
    /// The metrics service, when configured.
    pub metrics: Option<MetricsServiceClient<ServiceChannel>>,
    /// Every configured service, for health checks.
    pub upstreams: Arc<[Upstream]>,
    /// The configuration.
    pub config: Arc<GatewayConfig>,
    /// CPU use of the gateway process.
    pub cpu: Arc<CpuMeter>,
    /// Cancelled at shutdown, to end open event streams.
    pub shutdown: CancellationToken,
    /// Who may call what.
    pub auth: Authenticator,
    /// The task watches each key holds open.
    pub streams: Arc<StreamSlots>,
    /// The gateway's own database (API keys), which its readiness follows.
    pub database: swarm_kit::db::Pool,
}

impl AppState {
    /// Builds clients for every configured service; nothing connects until first use.
    pub fn new(
        config: GatewayConfig,
        shutdown: CancellationToken,
        auth: Authenticator,
        database: swarm_kit::db::Pool,
    ) -> Result<Self, ConfigError> {
        let tasks_channel = channel(
            "SWARM_TASKS_URL",
            &config.tasks_url,
            &config.service_credentials,
        )?;
        let agents_channel = channel(
            "SWARM_AGENTS_URL",
            &config.agents_url,
            &config.service_credentials,
        )?;
        let cache_channel = channel(
            "SWARM_CACHE_URL",
            &config.cache_url,
            &config.service_credentials,
        )?;
        let mut upstreams = vec![
            Upstream {
                name: "tasks",
                channel: tasks_channel.clone(),
            },
            Upstream {
                name: "agents",
                channel: agents_channel.clone(),
            },
            Upstream {
                name: "cache",
                channel: cache_channel.clone(),
            },
        ];
        let metrics_channel = match &config.metrics.url {
            Some(url) => Some(channel(
                "SWARM_METRICS_URL",
                url,
                &config.service_credentials,
            )?),
            None => None,
        };
        if let Some(channel) = &metrics_channel {
            upstreams.push(Upstream {
                name: "metrics",
                channel: channel.clone(),
            });
        }
        let tasks =
            TaskServiceClient::new(tasks_channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let agents = AgentServiceClient::new(agents_channel);
        let cache =
            CacheServiceClient::new(cache_channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self(Arc::new(Shared {
            tasks,
            agents,
            cache,
            metrics: metrics_channel.map(MetricsServiceClient::new),
            upstreams: upstreams.into(),
            streams: StreamSlots::new(config.max_streams_per_key),
            config: Arc::new(config),
            cpu: Arc::new(CpuMeter::default()),
            shutdown,
            auth,
            database,
        })))
    }

    /// A client of the tasks service (clones share the connections to its replicas).
    pub fn tasks(&self) -> TaskServiceClient<ServiceChannel> {
        self.tasks.clone()
    }

    /// A client of the agents service (clones share the connections to its replicas).
    pub fn agents(&self) -> AgentServiceClient<ServiceChannel> {
        self.agents.clone()
    }

    /// A client of the cache service (clones share the connections to its replicas).
    pub fn cache(&self) -> CacheServiceClient<ServiceChannel> {
        self.cache.clone()
    }

    /// Wraps `message` for a call to a service within the gateway's deadline.
    pub fn ask<T>(&self, message: T) -> tonic::Request<T> {
        self.call(message, Duration::ZERO)
    }

    /// Wraps a gRPC message with the gateway's deadline plus `extra` (a claim's own wait).
    pub fn call<T>(&self, message: T, extra: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.config.request_timeout + extra);
        request
    }
}

fn channel(
    variable: &str,
    url: &str,
    token: &swarm_kit::service_auth::ServiceCredentials,
) -> Result<ServiceChannel, ConfigError> {
    // Calls set their own deadlines (a long-polling claim waits longer than a read).
    swarm_kit::grpc::lazy_channel(url, CONNECT_TIMEOUT, None, token)
        .map_err(|error| ConfigError::new(variable, url, error))
}

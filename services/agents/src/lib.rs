//! The Swarm agents service: the registry of worker agents served over gRPC
//! (`swarm.agents.v1.AgentService`), on SQLite or PostgreSQL.
//!
//! [`run`] is the whole service: it connects and migrates the database and serves the registry
//! with health and reflection until shutdown, then drains.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod storage;

use std::future::Future;
use std::time::Duration;

use swarm_kit::RunError;
use swarm_kit::cache_client::CacheClient;
use swarm_kit::clock::Clock;
use swarm_kit::config::ConfigError;
use swarm_kit::host::ServiceHost;
use swarm_proto::agents::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tracing::info;

pub use config::AgentsConfig;

/// Entries the near cache of agent data holds.
const NEAR_CACHE_ENTRIES: u64 = 10_000;
/// The longest a near-cached entry lives (invalidations usually evict it sooner).
const NEAR_CACHE_TTL: Duration = Duration::from_secs(30);

use crate::domain::AgentRegistry;
use crate::grpc::AgentGrpc;

/// Runs the agents service on `listener` until `shutdown` resolves; then it stops accepting,
/// lets in-flight calls finish and closes the database.
pub async fn run(
    listener: TcpListener,
    config: AgentsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let pool = config.database.connect().await?;
    let store = storage::open(pool.clone()).await?;
    let mut host = ServiceHost::new("agents", &config.metrics, &config.service_credentials)?;
    let clock = Clock::skewed(config.clock_skew_millis);
    clock.sync(&pool).await?;
    host.spawn(clock.clone().keep_synced(pool.clone(), host.stopping()));
    host.spawn(swarm_kit::statistics::keep_fresh(
        pool.clone(),
        storage::GROWING_TABLES,
        host.stopping(),
    ));
    let cache = CacheClient::new(
        &config.cache_url,
        swarm_kit::cache_keys::AGENTS,
        NEAR_CACHE_ENTRIES,
        NEAR_CACHE_TTL,
        host.stopping(),
        &config.service_credentials,
    )
    .map_err(|error| ConfigError::new("SWARM_CACHE_URL", &config.cache_url, error))?;
    let registry = AgentRegistry::new(store, config.agent_ttl, clock).with_cache(cache);
    host.serving::<AgentServiceServer<AgentGrpc>>(Some(&pool))
        .await;
    let agents = AgentServiceServer::new(AgentGrpc::new(registry));
    info!(backend = pool.backend(), "agents registry ready");
    let routes = host.routes().add_service(agents);
    let served = host.serve(listener, routes, shutdown).await;
    pool.close().await;
    served
}

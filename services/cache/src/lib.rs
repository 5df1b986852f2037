//! The Swarm cache service: short-lived values by key over gRPC
//! (`swarm.cache.v1.CacheService`), in Redis when `REDIS_URL` is set and in process memory
//! otherwise or while Redis is down, with invalidation events for near caches.
//!
//! [`run`] is the whole service: it serves the cache with health and reflection until shutdown,
//! then drains. Health is `SERVING` while Redis is down (the memory tier answers); `Stats`
//! reports `degraded`.

pub mod backend;
pub mod config;
pub mod grpc;
pub mod namespace;
pub mod tiered;

use std::future::Future;
use std::time::Duration;

use swarm_kit::RunError;
use swarm_kit::config::ConfigError;
use swarm_kit::metrics::{Registry, Reporter, names};
use swarm_proto::cache::v1::cache_service_server::CacheServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::info;

pub use config::CacheConfig;

use crate::backend::{MemoryBackend, RedisBackend};
use crate::grpc::CacheGrpc;
use crate::tiered::TieredCache;

/// The oldest count of Redis entries a periodic metrics report reuses (counting walks the
/// namespace).
const ENTRY_RECOUNT_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the cache service on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: CacheConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let redis = match &config.redis_url {
        Some(url) => {
            let backend = RedisBackend::new(url, &config.namespace, config.redis_timeout)
                .map_err(|error| ConfigError::new("REDIS_URL", url, error))?;
            Some((backend, url.clone()))
        }
        None => None,
    };
    let backend = if redis.is_some() { "redis" } else { "memory" };
    let cache = TieredCache::new(MemoryBackend::new(config.max_bytes), redis);
    let stop = CancellationToken::new();
    let mut background = vec![tokio::spawn(cache.clone().run_background(stop.clone()))];
    let reporter = Reporter::start(
        "cache",
        &config.metrics,
        &config.service_token,
        stop.clone(),
    )?;
    if let Some(reporter) = &reporter {
        let cache = cache.clone();
        background.push(reporter.refresh(move |registry| {
            let cache = cache.clone();
            async move { report_stats(&cache, &registry).await }
        }));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CacheServiceServer<CacheGrpc>>().await;
    let routes = Routes::new(health_service)
        .add_service(CacheServiceServer::new(CacheGrpc::new(cache, stop.clone())));
    info!(addr = %listener.local_addr()?, backend, "cache service listening");
    let served = swarm_kit::grpc::serve(
        listener,
        routes,
        shutdown,
        stop.clone(),
        reporter,
        &config.service_token,
    )
    .await;
    for task in background {
        let _ = task.await;
    }
    info!("cache service stopped");
    Ok(served?)
}

/// Copies the cache's running totals and size into the service's metrics; the size of a Redis
/// tier is counted afresh at most every [`ENTRY_RECOUNT_INTERVAL`].
async fn report_stats(cache: &TieredCache, registry: &Registry) {
    let stats = cache.stats_counted_within(ENTRY_RECOUNT_INTERVAL).await;
    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
    for (metric, value) in [
        (&names::CACHE_HITS, stats.hits),
        (&names::CACHE_MISSES, stats.misses),
        (&names::CACHE_EVICTIONS, stats.evictions),
    ] {
        registry.counter(metric, &[]).set_total(value as f64);
    }
    #[allow(clippy::cast_precision_loss)]
    registry
        .gauge(&names::CACHE_ENTRIES, &[])
        .set(stats.entries as f64);
}

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
use swarm_kit::host::ServiceHost;
use swarm_kit::metrics::{Registry, names};
use swarm_proto::cache::v1::cache_service_server::CacheServiceServer;
use tokio::net::TcpListener;
use tracing::info;

pub use config::CacheConfig;

use crate::backend::{MemoryBackend, RedisBackend, redis_client};
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
            let ca = match &config.redis_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|error| {
                    ConfigError::new("SWARM_REDIS_CA_FILE", path.display(), error)
                })?),
                None => None,
            };
            let backend = redis_client(url, ca)
                .and_then(|client| {
                    RedisBackend::new(client, &config.namespace, config.redis_timeout)
                })
                .map_err(|error| ConfigError::new("REDIS_URL", url, error))?;
            Some(backend)
        }
        None => None,
    };
    let backend = if redis.is_some() { "redis" } else { "memory" };
    let cache = TieredCache::new(MemoryBackend::new(config.max_bytes), redis);
    let mut host = ServiceHost::new("cache", &config.metrics, &config.service_credentials)?;
    host.spawn(cache.clone().run_background(host.stopping()));
    let counted = cache.clone();
    host.refresh(move |registry| {
        let cache = counted.clone();
        async move { report_stats(&cache, &registry).await }
    });
    host.serving::<CacheServiceServer<CacheGrpc>>(None).await;
    let routes = host
        .routes()
        .add_service(CacheServiceServer::new(CacheGrpc::new(
            cache,
            host.stopping(),
        )));
    info!(backend, "cache tiers ready");
    host.serve(listener, routes, shutdown).await
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

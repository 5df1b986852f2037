//! The `swarm.cache.v1.CacheService` gRPC surface: checks keys and values, stores each under
//! the namespace of the owner the call names, calls the tiered cache, and streams
//! invalidations of the services' own entries.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use swarm_kit::validate::InvalidInput;
use swarm_proto::cache::v1 as pb;
use swarm_proto::cache::v1::cache_service_server::CacheService;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::backend::Entry;
use crate::namespace::{Owner, internal_key, internal_prefix};
use crate::tiered::{Invalidation, TieredCache};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The time to live when a write names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest time to live (30 days).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most keys one `GetMany` may name.
pub const MAX_KEYS: usize = 1000;

/// The gRPC handler of the cache service.
#[derive(Debug, Clone)]
pub struct CacheGrpc {
    cache: Arc<TieredCache>,
    shutdown: CancellationToken,
}

impl CacheGrpc {
    /// Serves `cache`; invalidation streams end when `shutdown` is cancelled.
    pub fn new(cache: Arc<TieredCache>, shutdown: CancellationToken) -> Self {
        Self { cache, shutdown }
    }
}

fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(InvalidInput::new(format!("key must be 1 to {MAX_KEY_BYTES} bytes")).into());
    }
    Ok(())
}

fn answer(key: String, entry: Option<Entry>) -> pb::GetResponse {
    match entry {
        Some(entry) => pb::GetResponse {
            key,
            found: true,
            value: entry.value,
            // Round up: an entry with 300 ms left still has time left.
            ttl_seconds_remaining: entry.ttl_remaining.as_millis().div_ceil(1000) as u64,
        },
        None => pb::GetResponse {
            key,
            ..Default::default()
        },
    }
}

type InvalidationStream = Pin<Box<dyn Stream<Item = Result<pb::Invalidation, Status>> + Send>>;

#[tonic::async_trait]
impl CacheService for CacheGrpc {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        let owner = Owner::from_proto(request.namespace)?;
        let entry = self.cache.get(&owner.storage_key(&request.key)).await;
        Ok(Response::new(answer(request.key, entry)))
    }

    async fn get_many(
        &self,
        request: Request<pb::GetManyRequest>,
    ) -> Result<Response<pb::GetManyResponse>, Status> {
        let request = request.into_inner();
        if request.keys.len() > MAX_KEYS {
            return Err(InvalidInput::new(format!("at most {MAX_KEYS} keys")).into());
        }
        for key in &request.keys {
            check_key(key)?;
        }
        let owner = Owner::from_proto(request.namespace)?;
        let stored: Vec<String> = request
            .keys
            .iter()
            .map(|key| owner.storage_key(key))
            .collect();
        let found = self.cache.get_many(&stored).await;
        let entries = request
            .keys
            .into_iter()
            .zip(found)
            .map(|(key, entry)| answer(key, entry))
            .collect();
        Ok(Response::new(pb::GetManyResponse { entries }))
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        let owner = Owner::from_proto(request.namespace)?;
        if request.value.len() > MAX_VALUE_BYTES {
            return Err(InvalidInput::new("value must be at most 1 MiB").into());
        }
        let ttl = match request.ttl_seconds {
            0 => DEFAULT_TTL,
            seconds => Duration::from_secs(seconds),
        };
        if ttl > MAX_TTL {
            return Err(InvalidInput::new("ttl_seconds must be at most 30 days").into());
        }
        let cache = Arc::clone(&self.cache);
        let key = owner.storage_key(&request.key);
        to_the_end(async move { cache.set(&key, &request.value, ttl).await }).await?;
        Ok(Response::new(pb::SetResponse {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        let owner = Owner::from_proto(request.namespace)?;
        let cache = Arc::clone(&self.cache);
        let key = owner.storage_key(&request.key);
        let deleted = to_the_end(async move { cache.delete(&key).await }).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn delete_prefix(
        &self,
        request: Request<pb::DeletePrefixRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.prefix)?;
        let owner = Owner::from_proto(request.namespace)?;
        let cache = Arc::clone(&self.cache);
        let prefix = owner.storage_key(&request.prefix);
        let deleted = to_the_end(async move { cache.delete_prefix(&prefix).await }).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn tier(
        &self,
        _request: Request<pb::TierRequest>,
    ) -> Result<Response<pb::CacheTier>, Status> {
        Ok(Response::new(pb::CacheTier {
            backend: self.cache.backend().to_owned(),
            degraded: self.cache.is_degraded(),
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::CacheStats>, Status> {
        let stats = self.cache.stats().await;
        Ok(Response::new(pb::CacheStats {
            hits: stats.hits,
            misses: stats.misses,
            hit_rate: stats.hit_rate(),
            entries: stats.entries,
            evictions: stats.evictions,
            backend: stats.backend.to_owned(),
            degraded: stats.degraded,
        }))
    }

    type WatchInvalidationsStream = InvalidationStream;

    async fn watch_invalidations(
        &self,
        request: Request<pb::WatchInvalidationsRequest>,
    ) -> Result<Response<Self::WatchInvalidationsStream>, Status> {
        let prefix = request.into_inner().prefix;
        let mut invalidations = self.cache.subscribe();
        let mut gaps = self.cache.relay_gaps();
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sender.closed() => return,
                    Ok(()) = gaps.changed() => {
                        // Like a watcher that fell behind, below.
                        let missed = Status::data_loss(
                            "invalidations from other replicas were missed; drop cached entries and watch again",
                        );
                        let _ = sender.send(Err(missed)).await;
                        return;
                    }
                    next = invalidations.recv() => next,
                };
                let item = match next {
                    Ok(invalidation) => match internal(invalidation) {
                        Some(invalidation) if invalidation.concerns(&prefix) => {
                            Ok(to_proto(invalidation))
                        }
                        _ => continue,
                    },
                    // A watcher that fell behind cannot know what it missed: it must drop its
                    // near cache, so tell it and end the stream.
                    Err(RecvError::Lagged(missed)) => Err(Status::data_loss(format!(
                        "missed {missed} invalidations; drop cached entries and watch again"
                    ))),
                    Err(RecvError::Closed) => return,
                };
                let last = item.is_err();
                if sender.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Runs a change to the cache to its end, its announcement included, even when the caller stops
/// waiting (its deadline passes, its connection drops): a change half made, stored but not
/// announced, would leave near caches serving what it replaced. A prefix delete walks Redis
/// (`SCAN`), which may outlast a caller's deadline.
async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = T> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(change)
        .await
        .map_err(|error| swarm_kit::Error::internal(&error).into())
}

/// Names an invalidation of the services' own entries by the key the services use; tenants'
/// entries are never near-cached, so theirs are not streamed.
fn internal(invalidation: Invalidation) -> Option<Invalidation> {
    let key = if invalidation.is_prefix {
        internal_prefix(&invalidation.key)
    } else {
        internal_key(&invalidation.key)
    };
    Some(Invalidation {
        key: key?.to_owned(),
        is_prefix: invalidation.is_prefix,
    })
}

fn to_proto(invalidation: Invalidation) -> pb::Invalidation {
    pb::Invalidation {
        key: invalidation.key,
        is_prefix: invalidation.is_prefix,
    }
}

//! The client every service uses to reach the cache service, with a small near cache in front:
//! hot entries are answered from process memory, and a subscription to the cache service's
//! invalidation stream evicts them the moment anyone changes them anywhere. While the stream is
//! down the near cache is emptied and bypassed, so it never serves what it cannot vouch for.
//! A cache that does not answer is a miss, never an error: callers fall back to their source.
//! Remote lookups are pipelined: a few are in flight at once, and the gets that arrive meanwhile
//! go out together as one `GetMany` (one gRPC call, one Redis pipeline), so under load a get
//! costs a share of a call rather than a call; a lone get waits for no one and is a plain `Get`
//! in its caller's trace (a shared lookup follows from every caller's span).
//! Invalidations are repeated a moment later, which clears what a reader that read the source
//! just before a change stored just after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::grpc::ServiceChannel;
use moka::future::Cache;
use swarm_proto::cache::v1 as pb;
use swarm_proto::cache::v1::cache_service_client::CacheServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a cache call may take before it counts as a miss.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the watcher waits before subscribing again after the stream broke.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);
/// How long after an invalidation it is repeated: longer than a reader takes between reading
/// the source and storing what it read.
const REPEAT_INVALIDATION_AFTER: Duration = Duration::from_secs(1);
/// Remote lookups in flight at once; gets that arrive meanwhile wait for the next one.
const LOOKUPS_IN_FLIGHT: usize = 4;
/// The most keys one remote lookup carries.
const MAX_KEYS_PER_LOOKUP: usize = 256;
/// Gets waiting for a remote lookup at most; more wait to be queued.
const LOOKUP_QUEUE_DEPTH: usize = 4096;

/// A value found remotely and how long it has left there.
type Found = (Arc<[u8]>, Duration);

/// A get waiting for a remote lookup, and where its answer goes.
struct Lookup {
    key: String,
    caller: tracing::Span,
    answer: oneshot::Sender<Option<Found>>,
}

impl crate::batching::Waiting for Lookup {
    fn caller(&self) -> &tracing::Span {
        &self.caller
    }
}

/// A near-cached value and how long it may be kept.
#[derive(Clone)]
struct NearEntry {
    value: Arc<[u8]>,
    ttl: Duration,
}

/// Keeps each near entry no longer than the remote entry had left (and the client's bound).
struct UntilRemoteExpiry;

impl moka::Expiry<String, NearEntry> for UntilRemoteExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &NearEntry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A cache-service client with a near cache for keys under one prefix.
#[derive(Clone)]
pub struct CacheClient {
    remote: CacheServiceClient<ServiceChannel>,
    lookups: mpsc::Sender<Lookup>,
    near: Option<Cache<String, NearEntry>>,
    near_ttl: Duration,
    watching: Arc<AtomicBool>,
}

impl std::fmt::Debug for CacheClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheClient")
            .field("watching", &self.watching.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CacheClient {
    /// Connects (lazily) to the cache service at `url` and starts watching invalidations of
    /// keys under `prefix` until `stop` is cancelled. The near cache holds up to `near_entries`
    /// entries (none turns it off), each for at most `near_ttl` and never longer than its
    /// remote entry lives. Calls carry `token`.
    pub fn new(
        url: &str,
        prefix: &str,
        near_entries: u64,
        near_ttl: Duration,
        stop: CancellationToken,
        token: &crate::service_auth::ServiceCredentials,
    ) -> Result<Self, tonic::transport::Error> {
        // Calls set their own deadlines; the invalidation stream has none.
        let channel = crate::grpc::lazy_channel(url, CALL_TIMEOUT, None, token)?;
        let remote = CacheServiceClient::new(channel);
        let (lookups, pending) = mpsc::channel(LOOKUP_QUEUE_DEPTH);
        tokio::spawn(crate::batching::run(
            pending,
            LOOKUPS_IN_FLIGHT,
            MAX_KEYS_PER_LOOKUP,
            |keys| tracing::info_span!("cache.lookup", keys),
            {
                let remote = remote.clone();
                move |batch| look_up(remote.clone(), batch)
            },
        ));
        let client = Self {
            remote,
            lookups,
            near: (near_entries > 0).then(|| {
                Cache::builder()
                    .max_capacity(near_entries)
                    .expire_after(UntilRemoteExpiry)
                    .build()
            }),
            near_ttl,
            watching: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(client.clone().watch(prefix.to_owned(), stop));
        Ok(client)
    }

    /// Returns the value under `key`: from the near cache, else from the cache service.
    pub async fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let near = self
            .near
            .as_ref()
            .filter(|_| self.watching.load(Ordering::Relaxed));
        if let Some(near) = near
            && let Some(entry) = near.get(key).await
        {
            return Some(entry.value);
        }
        let (answer, found) = oneshot::channel();
        let lookup = Lookup {
            key: key.to_owned(),
            caller: tracing::Span::current(),
            answer,
        };
        self.lookups.send(lookup).await.ok()?;
        let (value, left) = found.await.ok()??;
        if let Some(near) = near {
            let entry = NearEntry {
                value: value.clone(),
                ttl: left.min(self.near_ttl),
            };
            near.insert(key.to_owned(), entry).await;
        }
        Some(value)
    }

    /// Stores `value` under `key` for `ttl`; a failure is logged, not returned.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let request = pb::SetRequest {
            key: key.to_owned(),
            value,
            ttl_seconds: ttl.as_secs().max(1),
            namespace: pb::Namespace::internal(),
        };
        let mut request = tonic::Request::new(request);
        request.set_timeout(CALL_TIMEOUT);
        if let Err(status) = self.remote.clone().set(request).await {
            debug!(key, code = ?status.code(), "cache write failed");
        }
    }

    /// Removes every key under `prefix`, here and (through the cache service's invalidations)
    /// in every other near cache, now and once more a second later (a reader may store what
    /// it read before the change after this call). Call it after the source changed and before
    /// answering.
    pub async fn invalidate_prefix(&self, prefix: &str) {
        self.delete_prefix(prefix).await;
        let (client, prefix) = (self.clone(), prefix.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(REPEAT_INVALIDATION_AFTER).await;
            client.delete_prefix(&prefix).await;
        });
    }

    async fn delete_prefix(&self, prefix: &str) {
        self.forget(prefix, true).await;
        let mut request = tonic::Request::new(pb::DeletePrefixRequest {
            prefix: prefix.to_owned(),
            namespace: pb::Namespace::internal(),
        });
        request.set_timeout(CALL_TIMEOUT);
        if let Err(status) = self.remote.clone().delete_prefix(request).await {
            warn!(prefix, code = ?status.code(), "cache invalidation failed; entries expire by ttl");
        }
    }

    async fn forget(&self, key: &str, is_prefix: bool) {
        let Some(near) = &self.near else {
            return;
        };
        if is_prefix {
            let prefix = key.to_owned();
            // Entries are few (a near cache is small); a scan is cheap.
            let doomed: Vec<Arc<String>> = near
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .map(|(key, _)| key)
                .collect();
            for key in doomed {
                near.invalidate(key.as_str()).await;
            }
        } else {
            near.invalidate(key).await;
        }
    }

    /// Follows the invalidation stream; the near cache is only used while it flows.
    async fn watch(self, prefix: String, stop: CancellationToken) {
        let mut remote = self.remote.clone();
        loop {
            let request = pb::WatchInvalidationsRequest {
                prefix: prefix.clone(),
            };
            let subscribed = tokio::select! {
                () = stop.cancelled() => return,
                subscribed = remote.watch_invalidations(request) => subscribed,
            };
            if let Ok(stream) = subscribed {
                let mut stream = stream.into_inner();
                self.watching.store(true, Ordering::Relaxed);
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = stream.message() => next,
                    };
                    match next {
                        Ok(Some(invalidation)) => {
                            self.forget(&invalidation.key, invalidation.is_prefix).await
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            // Whatever changed while the stream was down is unknown: trust nothing kept.
            self.watching.store(false, Ordering::Relaxed);
            if let Some(near) = &self.near {
                near.invalidate_all();
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
            }
        }
    }
}

/// Asks the cache service for every key of `batch` at once and answers each get; a lookup that
/// fails answers each with a miss.
async fn look_up(mut remote: CacheServiceClient<ServiceChannel>, batch: Vec<Lookup>) {
    let keys = batch.iter().map(|lookup| lookup.key.clone()).collect();
    let entries = fetch(&mut remote, keys).await.unwrap_or_else(|status| {
        debug!(keys = batch.len(), code = ?status.code(), "cache unavailable; treated as misses");
        Vec::new()
    });
    let mut entries = entries.into_iter();
    for lookup in batch {
        let found = entries.next().filter(|entry| entry.found).map(|entry| {
            let left = Duration::from_secs(entry.ttl_seconds_remaining);
            (Arc::from(entry.value), left)
        });
        // The asker may have given up (its own deadline); nothing to tell it then.
        let _ = lookup.answer.send(found);
    }
}

/// Reads one key with `Get` (so a lone get's trace shows the call it made) and several with
/// `GetMany`; answers in the order of `keys`.
async fn fetch(
    remote: &mut CacheServiceClient<ServiceChannel>,
    mut keys: Vec<String>,
) -> Result<Vec<pb::GetResponse>, tonic::Status> {
    let namespace = pb::Namespace::internal();
    if let [_] = keys.as_slice() {
        let key = keys.swap_remove(0);
        let mut request = tonic::Request::new(pb::GetRequest { key, namespace });
        request.set_timeout(CALL_TIMEOUT);
        return Ok(vec![remote.get(request).await?.into_inner()]);
    }
    let mut request = tonic::Request::new(pb::GetManyRequest { keys, namespace });
    request.set_timeout(CALL_TIMEOUT);
    Ok(remote.get_many(request).await?.into_inner().entries)
}

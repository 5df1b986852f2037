//! The cache a service process runs: Redis when configured and reachable, process memory
//! otherwise. Writes go to both tiers, so when Redis fails the memory tier answers at once and
//! the service reports itself `degraded`; a probe returns to Redis when it answers again. Every
//! write or delete is announced as an invalidation, locally and (through Redis pub/sub) to
//! every other replica.
//!
//! What the cache acknowledged while degraded is what it serves once Redis is back, even a Redis
//! that kept its data through the outage: the keys written or deleted meanwhile are kept in a
//! backlog, and before Redis answers again each is replayed (the memory tier's entry written,
//! or the key deleted), the prefixes deleted first. A backlog too large to keep drops the whole
//! namespace from Redis instead: the cache may lose entries, it never brings back a deleted or
//! overwritten one. Then every near cache is told to drop what it holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{BackendError, CacheBackend, Entry, MemoryBackend, RedisBackend};

/// How often a degraded cache asks Redis whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The most keys changed while degraded that are kept to replay; past it, the whole namespace
/// is dropped from Redis when it returns.
const BACKLOG_KEYS: usize = 100_000;

/// One change made while Redis may not have seen it.
#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    /// The key was written or deleted.
    Key(&'a str),
    /// Every key under the prefix was deleted.
    Prefix(&'a str),
}

/// The changes Redis has not seen, to replay when it answers again.
#[derive(Debug, Default)]
struct Backlog {
    keys: HashSet<String>,
    prefixes: Vec<String>,
    /// More keys changed than are kept: Redis's whole namespace is suspect.
    overflowed: bool,
}

impl Backlog {
    fn record(&mut self, change: Change<'_>) {
        match change {
            Change::Prefix(prefix) => self.prefixes.push(prefix.to_owned()),
            Change::Key(_) if self.overflowed => {}
            Change::Key(_) if self.keys.len() >= BACKLOG_KEYS => {
                self.overflowed = true;
                self.keys = HashSet::new();
            }
            Change::Key(key) => {
                self.keys.insert(key.to_owned());
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.overflowed |= other.overflowed;
        self.prefixes.extend(other.prefixes);
        for key in &other.keys {
            self.record(Change::Key(key));
        }
    }

    fn is_empty(&self) -> bool {
        !self.overflowed && self.keys.is_empty() && self.prefixes.is_empty()
    }
}

/// A key or namespace that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The key, or the prefix when `is_prefix`.
    pub key: String,
    /// Whether `key` is a whole prefix.
    pub is_prefix: bool,
}

impl Invalidation {
    /// Tells whether this invalidation touches keys under `prefix`.
    pub fn concerns(&self, prefix: &str) -> bool {
        self.key.starts_with(prefix) || (self.is_prefix && prefix.starts_with(&self.key))
    }

    fn encode(&self, origin: &str) -> String {
        format!("{origin}\n{}\n{}", u8::from(self.is_prefix), self.key)
    }

    fn decode(message: &str) -> Option<(&str, Self)> {
        let mut parts = message.splitn(3, '\n');
        let origin = parts.next()?;
        let is_prefix = parts.next()? == "1";
        let key = parts.next()?.to_owned();
        Some((origin, Self { key, is_prefix }))
    }
}

/// Cache statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries stored in the tier that answers.
    pub entries: u64,
    /// Entries evicted by the tier that answers.
    pub evictions: u64,
    /// `"redis"` or `"memory"`.
    pub backend: &'static str,
    /// Whether Redis is configured but the memory tier answers.
    pub degraded: bool,
}

impl Stats {
    /// Returns hits / (hits + misses), or 0 before any lookup.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// The two-tier cache of one cache-service process.
pub struct TieredCache {
    memory: MemoryBackend,
    redis: Option<RedisBackend>,
    /// Whether the memory tier answers for an unreachable Redis; set and cleared under
    /// `backlog`'s lock, so that a write either reaches Redis or is in the backlog.
    degraded: AtomicBool,
    backlog: Mutex<Backlog>,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: broadcast::Sender<Invalidation>,
    /// Counts the relay's returns after a break: other replicas' invalidations published
    /// meanwhile were missed.
    relay_gaps: watch::Sender<u64>,
    origin: String,
    /// The last count of Redis entries and when it was taken.
    redis_entries: Mutex<Option<(Instant, u64)>>,
}

impl std::fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("redis", &self.redis.is_some())
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TieredCache {
    /// Builds a cache over `memory` and, when given, Redis (not contacted yet).
    pub fn new(memory: MemoryBackend, redis: Option<RedisBackend>) -> Arc<Self> {
        let (invalidations, _) = broadcast::channel(4096);
        Arc::new(Self {
            memory,
            redis,
            degraded: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations,
            relay_gaps: watch::Sender::new(0),
            origin: uuid::Uuid::new_v4().to_string(),
            redis_entries: Mutex::new(None),
        })
    }

    /// Returns the entry under `key`, counting a hit or a miss.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let found = match self.healthy_redis() {
            Some(redis) => match redis.get(key).await {
                Ok(found) => found,
                Err(error) => {
                    self.degrade(&error, None);
                    self.memory_get(key).await
                }
            },
            None => self.memory_get(key).await,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Returns the entries under `keys`, in order, counting hits and misses.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<Entry>> {
        let found = match self.healthy_redis() {
            Some(redis) => match redis.get_many(keys).await {
                Ok(found) => found,
                Err(error) => {
                    self.degrade(&error, None);
                    self.memory_get_many(keys).await
                }
            },
            None => self.memory_get_many(keys).await,
        };
        let hits = found.iter().filter(|entry| entry.is_some()).count() as u64;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(found.len() as u64 - hits, Ordering::Relaxed);
        found
    }

    /// Stores `value` under `key` for `ttl` in both tiers, and announces the change.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        // The memory backend cannot fail.
        let _ = self.memory.set(key, value, ttl).await;
        if let Some(redis) = self.redis_for(Change::Key(key))
            && let Err(error) = redis.set(key, value, ttl).await
        {
            self.degrade(&error, Some(Change::Key(key)));
        }
        self.announce(Invalidation {
            key: key.to_owned(),
            is_prefix: false,
        })
        .await;
    }

    /// Removes `key` from both tiers and announces it; returns how many entries went.
    pub async fn delete(&self, key: &str) -> u64 {
        let in_memory = self.memory.delete(key).await.unwrap_or(0);
        let deleted = self
            .redis_or(Change::Key(key), in_memory, |redis| async move {
                redis.delete(key).await
            })
            .await;
        self.announce(Invalidation {
            key: key.to_owned(),
            is_prefix: false,
        })
        .await;
        deleted
    }

    /// Removes every key under `prefix` from both tiers and announces it; returns how many went.
    pub async fn delete_prefix(&self, prefix: &str) -> u64 {
        let in_memory = self.memory.delete_prefix(prefix).await.unwrap_or(0);
        let deleted = self
            .redis_or(Change::Prefix(prefix), in_memory, |redis| async move {
                redis.delete_prefix(prefix).await
            })
            .await;
        self.announce(Invalidation {
            key: prefix.to_owned(),
            is_prefix: true,
        })
        .await;
        deleted
    }

    /// Returns the tier the cache is configured with (`redis` or `memory`), from what it knows
    /// already: no call to Redis.
    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Returns the statistics of the tier that answers now, its entries counted now.
    pub async fn stats(&self) -> Stats {
        self.stats_counted_within(Duration::ZERO).await
    }

    /// Returns the statistics of the tier that answers now, reusing a count of Redis entries
    /// up to `max_age` old: counting walks the whole namespace (`SCAN`), so its cost grows with
    /// the cache, and periodic reports need not pay it each time.
    pub async fn stats_counted_within(&self, max_age: Duration) -> Stats {
        let (backend, entries, evictions) = match self.healthy_redis() {
            Some(redis) => match (
                self.redis_entries(redis, max_age).await,
                redis.evictions().await,
            ) {
                (Ok(entries), Ok(evictions)) => ("redis", entries, evictions),
                (Err(error), _) | (_, Err(error)) => {
                    self.degrade(&error, None);
                    self.memory_figures().await
                }
            },
            None => self.memory_figures().await,
        };
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            evictions,
            backend,
            degraded: self.is_degraded(),
        }
    }

    async fn redis_entries(
        &self,
        redis: &RedisBackend,
        max_age: Duration,
    ) -> Result<u64, BackendError> {
        let lock = || self.redis_entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((counted_at, entries)) = *lock()
            && counted_at.elapsed() < max_age
        {
            return Ok(entries);
        }
        let entries = redis.entries().await?;
        *lock() = Some((Instant::now(), entries));
        Ok(entries)
    }

    /// Tells whether Redis is configured but unreachable.
    pub fn is_degraded(&self) -> bool {
        self.redis.is_some() && self.degraded.load(Ordering::Relaxed)
    }

    /// Subscribes to invalidations (local ones and, with Redis, other replicas').
    pub fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }

    /// Follows the gaps in the relay of other replicas' invalidations: the value changes each
    /// time the relay comes back after a break, and whatever a subscriber kept since it last
    /// looked may have been changed elsewhere without a word.
    pub fn relay_gaps(&self) -> watch::Receiver<u64> {
        self.relay_gaps.subscribe()
    }

    /// Runs the background work until `stop`: the probe that leaves degraded mode when Redis
    /// answers again, and the relay of other replicas' invalidations from Redis pub/sub.
    pub async fn run_background(self: Arc<Self>, stop: CancellationToken) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let subscriber = redis.client().clone();
        let probe = {
            let cache = self.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(PROBE_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let answered = redis.ping().await;
                    match (cache.degraded.load(Ordering::Relaxed), answered) {
                        (true, Ok(())) => match cache.recover(&redis).await {
                            Ok(()) => info!("redis answers again; leaving degraded mode"),
                            Err(error) => {
                                warn!(%error, "redis answers, but the replay failed; staying degraded")
                            }
                        },
                        (false, Err(error)) => cache.degrade(&error, None),
                        _ => {}
                    }
                }
            }
        };
        tokio::join!(probe, self.relay_invalidations(subscriber, stop));
    }

    async fn relay_invalidations(&self, client: redis::Client, stop: CancellationToken) {
        let channel = self.channel();
        let mut broken = false;
        loop {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                () = stop.cancelled() => return,
                subscribed = tokio::time::timeout(Duration::from_secs(2), subscribed) => subscribed,
            };
            let mut messages = match pubsub {
                Ok(Ok(pubsub)) => pubsub.into_on_message(),
                Ok(Err(_)) | Err(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(PROBE_INTERVAL) => continue,
                    }
                }
            };
            if broken {
                // What other replicas announced during the break never came: every watcher
                // must drop what it keeps. The memory tier stays: while degraded it holds the
                // only copy of acknowledged writes, and leaving degraded mode announces that
                // everything changed anyway.
                self.relay_gaps.send_modify(|gaps| *gaps += 1);
                warn!("the invalidation relay is back after a break; watchers drop their entries");
            }
            broken = true;
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((origin, invalidation)) = Invalidation::decode(&payload)
                    && origin != self.origin
                {
                    self.forget_locally(&invalidation).await;
                    let _ = self.invalidations.send(invalidation);
                }
            }
        }
    }

    fn channel(&self) -> String {
        let namespace = self.redis.as_ref().map_or("", |redis| redis.namespace());
        format!("{namespace}invalidations")
    }

    async fn forget_locally(&self, invalidation: &Invalidation) {
        let forgotten = if invalidation.is_prefix {
            self.memory.delete_prefix(&invalidation.key).await
        } else {
            self.memory.delete(&invalidation.key).await
        };
        drop(forgotten);
    }

    async fn announce(&self, invalidation: Invalidation) {
        if let Some(redis) = self.healthy_redis() {
            let mut connection = redis.connection();
            let message = invalidation.encode(&self.origin);
            let channel = self.channel();
            let published = tokio::time::timeout(
                PROBE_INTERVAL,
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<u64>(&mut connection),
            )
            .await;
            if !matches!(published, Ok(Ok(_))) {
                warn!(key = %invalidation.key, "cannot publish invalidation to other replicas");
            }
        }
        let _ = self.invalidations.send(invalidation);
    }

    fn healthy_redis(&self) -> Option<&RedisBackend> {
        self.redis
            .as_ref()
            .filter(|_| !self.degraded.load(Ordering::Relaxed))
    }

    /// Enters degraded mode after `error`, keeping `change` (which Redis may have missed) for
    /// the replay.
    fn degrade(&self, error: &BackendError, change: Option<Change<'_>>) {
        let mut backlog = self.backlog();
        if let Some(change) = change {
            backlog.record(change);
        }
        if !self.degraded.swap(true, Ordering::Relaxed) {
            warn!(%error, "redis unreachable; serving from memory (degraded)");
        }
    }

    /// Makes `change` in Redis through `call`, or keeps it for the replay while degraded;
    /// answers `fallback` (the memory tier's count) when Redis does not.
    async fn redis_or<F, Fut>(&self, change: Change<'_>, fallback: u64, call: F) -> u64
    where
        F: FnOnce(RedisBackend) -> Fut,
        Fut: Future<Output = Result<u64, BackendError>>,
    {
        match self.redis_for(change) {
            Some(redis) => match call(redis.clone()).await {
                Ok(count) => count,
                Err(error) => {
                    self.degrade(&error, Some(change));
                    fallback
                }
            },
            None => fallback,
        }
    }

    /// The Redis to make `change` in; none while degraded, when `change` goes to the backlog.
    fn redis_for(&self, change: Change<'_>) -> Option<&RedisBackend> {
        let redis = self.redis.as_ref()?;
        let mut backlog = self.backlog();
        if self.degraded.load(Ordering::Relaxed) {
            backlog.record(change);
            None
        } else {
            Some(redis)
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Leaves degraded mode once every change Redis missed is replayed, then tells every near
    /// cache to drop what it holds. Changes made during the replay join it; a failure keeps
    /// the cache degraded, with the backlog whole, for the next probe.
    async fn recover(&self, redis: &RedisBackend) -> Result<(), BackendError> {
        loop {
            let missed = {
                let mut backlog = self.backlog();
                if backlog.is_empty() {
                    self.degraded.store(false, Ordering::Relaxed);
                    break;
                }
                std::mem::take(&mut *backlog)
            };
            if let Err(error) = self.replay(redis, &missed).await {
                self.backlog().merge(missed);
                return Err(error);
            }
        }
        self.announce(Invalidation {
            key: String::new(),
            is_prefix: true,
        })
        .await;
        Ok(())
    }

    /// Makes Redis hold what the memory tier holds for every change in `missed`.
    async fn replay(&self, redis: &RedisBackend, missed: &Backlog) -> Result<(), BackendError> {
        if missed.overflowed {
            warn!("too many keys changed while redis was away to replay: dropping every entry");
            redis.delete_prefix("").await?;
            return Ok(());
        }
        for prefix in &missed.prefixes {
            redis.delete_prefix(prefix).await?;
        }
        for key in &missed.keys {
            match self.memory_get(key).await {
                Some(entry) => redis.set(key, &entry.value, entry.ttl_remaining).await?,
                None => drop(redis.delete(key).await?),
            }
        }
        info!(
            keys = missed.keys.len(),
            prefixes = missed.prefixes.len(),
            "replayed the changes redis missed"
        );
        Ok(())
    }

    async fn memory_get(&self, key: &str) -> Option<Entry> {
        self.memory.get(key).await.ok().flatten()
    }

    async fn memory_get_many(&self, keys: &[String]) -> Vec<Option<Entry>> {
        self.memory.get_many(keys).await.unwrap_or_default()
    }

    async fn memory_figures(&self) -> (&'static str, u64, u64) {
        (
            "memory",
            self.memory.entries().await.unwrap_or(0),
            self.memory.evictions().await.unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_and_match_prefixes() {
        let key = Invalidation {
            key: "agents:1:config".into(),
            is_prefix: false,
        };
        let encoded = key.encode("me");
        assert_eq!(Invalidation::decode(&encoded), Some(("me", key.clone())));
        assert!(key.concerns("agents:"));
        assert!(!key.concerns("tasks:"));
        let namespace = Invalidation {
            key: "agents:".into(),
            is_prefix: true,
        };
        assert!(namespace.concerns("agents:1:"));
        assert!(namespace.concerns("agents"));
    }
}

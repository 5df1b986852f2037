//! The memory backend: a moka cache bounded in bytes, least recently used first out, with a
//! time to live per entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use super::{BackendError, CacheBackend, Entry};

/// Bytes counted per entry on top of its key and value (bookkeeping).
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug)]
struct Stored {
    value: Vec<u8>,
    ttl: Duration,
    expires_at: Instant,
}

/// Gives each entry its own time to live.
struct PerEntryTtl;

impl Expiry<String, Arc<Stored>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Stored>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Stored>,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Entries in process memory.
#[derive(Clone)]
pub struct MemoryBackend {
    cache: Cache<String, Arc<Stored>>,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// Builds a cache that holds at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, stored: &Arc<Stored>| {
                u32::try_from(key.len() + stored.value.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { cache, evictions }
    }

    fn entry(stored: &Stored) -> Option<Entry> {
        let ttl_remaining = stored.expires_at.checked_duration_since(Instant::now())?;
        Some(Entry {
            value: stored.value.clone(),
            ttl_remaining,
        })
    }
}

#[async_trait]
impl CacheBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        Ok(self
            .cache
            .get(key)
            .await
            .and_then(|stored| Self::entry(&stored)))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, BackendError> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push(self.get(key).await?);
        }
        Ok(entries)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let stored = Stored {
            value: value.to_vec(),
            ttl,
            expires_at: Instant::now() + ttl,
        };
        self.cache.insert(key.to_owned(), Arc::new(stored)).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<u64, BackendError> {
        Ok(u64::from(self.cache.remove(key).await.is_some()))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let doomed: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key)
            .collect();
        let mut deleted = 0;
        for key in doomed {
            if self.cache.remove(key.as_str()).await.is_some() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn entries(&self) -> Result<u64, BackendError> {
        self.cache.run_pending_tasks().await;
        Ok(self.cache.entry_count())
    }

    async fn evictions(&self) -> Result<u64, BackendError> {
        self.cache.run_pending_tasks().await;
        Ok(self.evictions.load(Ordering::Relaxed))
    }
}

//! Cache backends: process memory (a byte-bounded LRU with per-entry TTL) and Redis, behind one
//! trait with one conformance suite.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryBackend;
pub use self::redis::{RedisBackend, client as redis_client};

/// A stored value and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Time left before it expires.
    pub ttl_remaining: Duration,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where cache entries live.
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// Returns `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// Returns the entry under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError>;

    /// Returns the entries under `keys`, in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, BackendError>;

    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError>;

    /// Removes `key`; returns how many entries went (0 or 1).
    async fn delete(&self, key: &str) -> Result<u64, BackendError>;

    /// Removes every key starting with `prefix`; returns how many went.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError>;

    /// Counts the entries stored now.
    async fn entries(&self) -> Result<u64, BackendError>;

    /// Counts entries removed to respect the size bound.
    async fn evictions(&self) -> Result<u64, BackendError>;
}

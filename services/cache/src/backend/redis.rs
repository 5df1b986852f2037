//! The Redis backend: entries are Redis strings with a millisecond expiry under one namespace;
//! prefix deletes walk the namespace with `SCAN` (never `KEYS`) and `UNLINK` in batches. Every
//! call is bounded by a short timeout, so a dead Redis costs a caller milliseconds, not a hang.
//! `rediss://` URLs connect over TLS, verified against a configured or the system's authorities.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::Instrument as _;

use super::{BackendError, CacheBackend, Entry};

/// Keys per `SCAN` step and per `UNLINK`.
const SCAN_BATCH: usize = 500;
/// What `PTTL` answers for a key that does not exist.
const KEY_GONE: i64 = -2;

/// Entries in Redis.
#[derive(Clone)]
pub struct RedisBackend {
    client: redis::Client,
    connection: ConnectionManager,
    namespace: String,
    timeout: Duration,
}

/// A client of the Redis at `url`; over TLS (`rediss://`) its certificate must chain to the
/// authority in `ca_pem` when given, else to one the system trusts.
pub fn client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client, BackendError> {
    Ok(match ca_pem {
        Some(root_cert) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )?,
        None => redis::Client::open(url)?,
    })
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Builds a backend for `client` keeping keys under `namespace`; it connects on first use
    /// and reconnects by itself, and no call waits longer than `timeout`.
    pub fn new(
        client: redis::Client,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            connection,
            namespace: namespace.to_owned(),
            timeout,
        })
    }

    /// Returns the namespace every key lives under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Returns the client, for connections of their own (subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Returns the connection, for publishing.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let mut connection = self.connection.clone();
        self.bounded("PING", async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    /// Runs `call`, Redis command `command`, within the configured timeout; inside a traced
    /// request it is a child span of the request.
    async fn bounded<T>(
        &self,
        command: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        let bounded = tokio::time::timeout(self.timeout, call);
        let finished = if tracing::Span::current().is_none() {
            bounded.await
        } else {
            let span = tracing::info_span!(
                "redis",
                otel.name = command,
                otel.kind = "client",
                db.system.name = "redis",
            );
            bounded.instrument(span).await
        };
        match finished {
            Ok(result) => Ok(result?),
            Err(_) => Err(BackendError::Timeout(self.timeout)),
        }
    }

    /// Counts or deletes the keys under `pattern`, a `SCAN` match pattern.
    async fn scan(&self, pattern: &str, delete: bool) -> Result<u64, BackendError> {
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut total = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .bounded(
                    "SCAN",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(&mut connection),
                )
                .await?;
            if delete && !keys.is_empty() {
                let unlinked: u64 = self
                    .bounded(
                        "UNLINK",
                        redis::cmd("UNLINK").arg(&keys).query_async(&mut connection),
                    )
                    .await?;
                total += unlinked;
            } else {
                total += keys.len() as u64;
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }
}

/// Escapes the glob characters of `SCAN MATCH` in `text`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The entry of a `GET` (or `MGET`) answer and the `PTTL` that followed it: a key that expired
/// in between (`PTTL` -2) is a miss, as it would be a moment later.
fn entry(value: Option<Vec<u8>>, ttl_ms: i64) -> Option<Entry> {
    let value = value.filter(|_| ttl_ms != KEY_GONE)?;
    Some(Entry {
        value,
        ttl_remaining: Duration::from_millis(ttl_ms.max(0).unsigned_abs()),
    })
}

#[async_trait]
impl CacheBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        let (value, ttl_ms): (Option<Vec<u8>>, i64) = self
            .bounded(
                "GET",
                redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut connection),
            )
            .await?;
        Ok(entry(value, ttl_ms))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One MGET for the values and a PTTL a key (no command answers both): n + 1 commands
        // rather than a GET and a PTTL a key, and the values are taken, not copied.
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        let mut pipe = redis::pipe();
        pipe.mget(&keys);
        for key in &keys {
            pipe.pttl(key);
        }
        let mut connection = self.connection.clone();
        let mut answers = self
            .bounded(
                "MGET",
                pipe.query_async::<Vec<redis::Value>>(&mut connection),
            )
            .await?
            .into_iter();
        let values: Vec<Option<Vec<u8>>> = match answers.next() {
            Some(values) => redis::from_redis_value(values).map_err(redis::RedisError::from)?,
            None => Vec::new(),
        };
        let ttls = answers
            .map(redis::from_redis_value::<i64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(redis::RedisError::from)?;
        if values.len() != keys.len() || ttls.len() != keys.len() {
            return Err(BackendError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "mget answered for another number of keys",
            ))));
        }
        Ok(values
            .into_iter()
            .zip(ttls)
            .map(|(value, ttl)| entry(value, ttl))
            .collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.bounded("PSETEX", async move {
            connection.pset_ex::<_, _, ()>(&key, value, ttl_ms).await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<u64, BackendError> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        self.bounded("DEL", async move { connection.del::<_, u64>(&key).await })
            .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let pattern = format!("{}*", glob_escape(&self.key(prefix)));
        self.scan(&pattern, true).await
    }

    async fn entries(&self) -> Result<u64, BackendError> {
        let pattern = format!("{}*", glob_escape(&self.namespace));
        self.scan(&pattern, false).await
    }

    async fn evictions(&self) -> Result<u64, BackendError> {
        let mut connection = self.connection.clone();
        let info: String = self
            .bounded(
                "INFO",
                redis::cmd("INFO").arg("stats").query_async(&mut connection),
            )
            .await?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("evicted_keys:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_expired_before_its_pttl_is_a_miss() {
        let value = || Some(b"v".to_vec());
        assert_eq!(entry(value(), KEY_GONE), None);
        assert_eq!(entry(None, 1_500), None);
        assert_eq!(
            entry(value(), 1_500).map(|entry| entry.ttl_remaining),
            Some(Duration::from_millis(1_500))
        );
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

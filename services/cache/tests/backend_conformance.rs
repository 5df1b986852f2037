//! One conformance suite for cache backends, run against process memory and a real Redis:
//! values and their time to live, expiry, deletes by key and by prefix, batch reads and counts.
//! Redis comes from `SWARM_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); each test works
//! in a namespace of its own and empties it.

use std::sync::Arc;
use std::time::Duration;

use swarm_cache::backend::{CacheBackend, MemoryBackend, RedisBackend, redis_client};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

fn redis_url() -> String {
    std::env::var("SWARM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn backend(kind: Kind) -> Arc<dyn CacheBackend> {
    match kind {
        Kind::Memory => Arc::new(MemoryBackend::new(64 * 1024 * 1024)),
        Kind::Redis => {
            let namespace = format!("swarm-test:{}:", uuid::Uuid::new_v4().simple());
            let redis = RedisBackend::new(
                redis_client(&redis_url(), None).unwrap(),
                &namespace,
                Duration::from_secs(2),
            )
            .unwrap();
            redis
                .ping()
                .await
                .unwrap_or_else(|error| panic!("redis at {} is needed: {error}", redis_url()));
            Arc::new(redis)
        }
    }
}

/// Empties the backend's namespace so Redis keeps nothing from the test.
async fn clean(cache: &dyn CacheBackend) {
    // Every key in these tests starts with one of these letters.
    for prefix in ["a", "k", "t", "x", "s"] {
        cache.delete_prefix(prefix).await.unwrap();
    }
}

async fn values_round_trip_with_their_ttl(kind: Kind) {
    let cache = backend(kind).await;
    cache
        .set("k:1", b"\x00binary\xff", Duration::from_secs(60))
        .await
        .unwrap();
    let entry = cache.get("k:1").await.unwrap().expect("stored");
    assert_eq!(entry.value, b"\x00binary\xff");
    assert!(
        entry.ttl_remaining <= Duration::from_secs(60)
            && entry.ttl_remaining > Duration::from_secs(58)
    );
    assert!(cache.get("k:missing").await.unwrap().is_none());
    cache
        .set("k:1", b"new", Duration::from_secs(5))
        .await
        .unwrap();
    let entry = cache.get("k:1").await.unwrap().unwrap();
    assert_eq!(
        (
            entry.value.as_slice(),
            entry.ttl_remaining <= Duration::from_secs(5)
        ),
        (&b"new"[..], true)
    );
    clean(cache.as_ref()).await;
}

async fn entries_expire_after_their_ttl(kind: Kind) {
    let cache = backend(kind).await;
    cache
        .set("t:short", b"x", Duration::from_millis(300))
        .await
        .unwrap();
    cache
        .set("t:long", b"y", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(cache.get("t:short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(cache.get("t:short").await.unwrap().is_none());
    assert!(cache.get("t:long").await.unwrap().is_some());
    clean(cache.as_ref()).await;
}

async fn deletes_by_key_and_by_prefix(kind: Kind) {
    let cache = backend(kind).await;
    let ttl = Duration::from_secs(60);
    for key in ["a:1", "a:2", "a*:3", "ab:4", "x:5"] {
        cache.set(key, b"v", ttl).await.unwrap();
    }
    assert_eq!(cache.delete("x:5").await.unwrap(), 1);
    assert_eq!(cache.delete("x:5").await.unwrap(), 0);
    // Glob characters in a prefix are literal.
    assert_eq!(cache.delete_prefix("a*").await.unwrap(), 1);
    assert_eq!(cache.delete_prefix("a:").await.unwrap(), 2);
    assert!(cache.get("ab:4").await.unwrap().is_some());
    assert_eq!(cache.entries().await.unwrap(), 1);
    clean(cache.as_ref()).await;
}

async fn batch_reads_keep_order(kind: Kind) {
    let cache = backend(kind).await;
    cache
        .set("s:1", b"one", Duration::from_secs(60))
        .await
        .unwrap();
    cache
        .set("s:3", b"three", Duration::from_secs(5))
        .await
        .unwrap();
    let keys: Vec<String> = ["s:1", "s:2", "s:3"].map(str::to_owned).to_vec();
    let found = cache.get_many(&keys).await.unwrap();
    let ttls: Vec<Option<Duration>> = found
        .iter()
        .map(|e| e.as_ref().map(|e| e.ttl_remaining))
        .collect();
    let values: Vec<Option<Vec<u8>>> = found.into_iter().map(|e| e.map(|e| e.value)).collect();
    assert_eq!(
        values,
        [Some(b"one".to_vec()), None, Some(b"three".to_vec())]
    );
    // Each entry carries its own time left.
    assert!(
        ttls[0].is_some_and(|ttl| ttl > Duration::from_secs(58) && ttl <= Duration::from_secs(60)),
        "{ttls:?}"
    );
    assert!(
        ttls[2].is_some_and(|ttl| ttl > Duration::from_secs(3) && ttl <= Duration::from_secs(5)),
        "{ttls:?}"
    );
    assert!(cache.get_many(&[]).await.unwrap().is_empty());
    clean(cache.as_ref()).await;
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Redis).await;
                }
            )*
        }
    };
}

conformance!(
    values_round_trip_with_their_ttl,
    entries_expire_after_their_ttl,
    deletes_by_key_and_by_prefix,
    batch_reads_keep_order,
);

#[tokio::test]
async fn memory_evicts_least_recently_used_within_its_byte_bound() {
    const BOUND: u64 = 20_000;
    let cache = MemoryBackend::new(BOUND);
    let value = vec![7u8; 200];
    let ttl = Duration::from_secs(60);
    cache.set("k:hot", &value, ttl).await.unwrap();
    cache.set("k:cold", &value, ttl).await.unwrap();
    for i in 0..300 {
        cache.set(&format!("k:{i}"), &value, ttl).await.unwrap();
        // Keep one entry in use while the rest churn.
        assert!(
            cache.get("k:hot").await.unwrap().is_some(),
            "hot entry survived {i} inserts"
        );
        cache.entries().await.unwrap();
    }
    let entries = cache.entries().await.unwrap();
    assert!(
        entries * 200 <= BOUND,
        "{entries} entries of 200 bytes exceed {BOUND}"
    );
    assert!(cache.evictions().await.unwrap() > 200);
    assert!(
        cache.get("k:cold").await.unwrap().is_none(),
        "the least recently used entry went first"
    );
    assert!(cache.get("k:299").await.unwrap().is_some());
}

//! The tiered cache as the service runs it: hit and miss statistics; invalidations that reach
//! another replica through Redis; Redis killed and restarted mid-test while callers keep
//! getting answers (from memory, degraded) and the cache goes back to Redis by itself; a Redis
//! that keeps its data through an outage serving, once back, what the cache acknowledged
//! meanwhile; and a relay back from a break telling its watchers what they may have missed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_cache::backend::{MemoryBackend, RedisBackend, redis_client};
use swarm_cache::tiered::{Invalidation, TieredCache};
use swarm_kit::testing::{RedisServer, TestCertificates};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;

fn shared_redis_url() -> String {
    std::env::var("SWARM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn tiered(url: &str, namespace: &str) -> Arc<TieredCache> {
    let client = redis_client(url, None).unwrap();
    let redis = RedisBackend::new(client, namespace, Duration::from_millis(200)).unwrap();
    TieredCache::new(MemoryBackend::new(8 * MIB), Some(redis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_hits_and_misses() {
    let cache = TieredCache::new(MemoryBackend::new(8 * MIB), None);
    cache.set("k", b"v", Duration::from_secs(60)).await;
    for _ in 0..4 {
        assert!(cache.get("k").await.is_some());
    }
    assert!(cache.get("absent").await.is_none());
    let stats = cache.stats().await;
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.entries,
            stats.backend,
            stats.degraded
        ),
        (4, 1, 1, "memory", false)
    );
    assert!((stats.hit_rate() - 0.8).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_count_of_redis_entries_is_reused_only_when_asked() {
    let namespace = format!("swarm-test:{}:", uuid::Uuid::new_v4().simple());
    let cache = tiered(&shared_redis_url(), &namespace);
    cache.set("a", b"1", Duration::from_secs(60)).await;
    assert_eq!(cache.stats().await.entries, 1);
    cache.set("b", b"2", Duration::from_secs(60)).await;
    let hour = Duration::from_secs(3600);
    assert_eq!(cache.stats_counted_within(hour).await.entries, 1, "reused");
    assert_eq!(cache.stats().await.entries, 2, "counted now");
    cache.set("c", b"3", Duration::from_secs(60)).await;
    assert_eq!(
        cache.stats_counted_within(Duration::ZERO).await.entries,
        3,
        "a count may not be older than asked"
    );
    cache.delete_prefix("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_replica_invalidates_the_other() {
    let namespace = format!("swarm-test:{}:", uuid::Uuid::new_v4().simple());
    let (a, b) = (
        tiered(&shared_redis_url(), &namespace),
        tiered(&shared_redis_url(), &namespace),
    );
    let stop = CancellationToken::new();
    let relays = [
        tokio::spawn(a.clone().run_background(stop.clone())),
        tokio::spawn(b.clone().run_background(stop.clone())),
    ];
    let mut on_b = b.subscribe();
    // Give the relays time to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.set("agents:1:config", b"{\"v\":2}", Duration::from_secs(60))
        .await;
    let heard = tokio::time::timeout(Duration::from_secs(2), on_b.recv())
        .await
        .expect("b hears of a's write")
        .unwrap();
    assert_eq!(
        heard,
        Invalidation {
            key: "agents:1:config".into(),
            is_prefix: false
        }
    );
    assert_eq!(
        b.get("agents:1:config").await.unwrap().value,
        b"{\"v\":2}",
        "b reads a's value from redis"
    );

    a.delete_prefix("agents:").await;
    let heard = tokio::time::timeout(Duration::from_secs(2), on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        heard,
        Invalidation {
            key: "agents:".into(),
            is_prefix: true
        }
    );
    assert!(b.get("agents:1:config").await.is_none());

    stop.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_never_see_redis_die_and_come_back() {
    let mut redis = RedisServer::start();
    let cache = tiered(&redis.url(), "swarm-test:");
    let stop = CancellationToken::new();
    let background = tokio::spawn(cache.clone().run_background(stop.clone()));

    cache
        .set("k:kept", b"before", Duration::from_secs(60))
        .await;
    assert_eq!(cache.stats().await.backend, "redis");

    redis.kill();
    let started = Instant::now();
    assert_eq!(
        cache.get("k:kept").await.unwrap().value,
        b"before",
        "the memory tier answers"
    );
    cache
        .set("k:during", b"during", Duration::from_secs(60))
        .await;
    assert_eq!(cache.get("k:during").await.unwrap().value, b"during");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a dead redis cost {:?}",
        started.elapsed()
    );
    let stats = cache.stats().await;
    assert_eq!((stats.backend, stats.degraded), ("memory", true));

    let _redis = RedisServer::start_on(redis.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.is_degraded() {
        assert!(
            Instant::now() < deadline,
            "the cache did not go back to redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cache
        .set("k:after", b"after", Duration::from_secs(60))
        .await;
    assert_eq!(cache.get("k:after").await.unwrap().value, b"after");
    let stats = cache.stats().await;
    assert_eq!((stats.backend, stats.degraded), ("redis", false));

    stop.cancel();
    background.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_back_from_a_break_tells_its_watchers_they_missed_invalidations() {
    let mut redis = RedisServer::start();
    let cache = tiered(&redis.url(), "swarm-test:");
    let stop = CancellationToken::new();
    let background = tokio::spawn(cache.clone().run_background(stop.clone()));
    let mut gaps = cache.relay_gaps();
    // Subscribed and relaying: no gap yet.
    let other = tiered(&redis.url(), "swarm-test:");
    let mut invalidations = cache.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        other.delete("probe").await;
        let relayed = tokio::time::timeout(Duration::from_millis(200), invalidations.recv());
        if relayed.await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the relay subscribed");
    }
    assert!(!gaps.has_changed().unwrap());

    redis.kill();
    let _redis = RedisServer::start_on(redis.port());
    tokio::time::timeout(Duration::from_secs(10), gaps.changed())
        .await
        .expect("the relay came back and said so")
        .unwrap();
    stop.cancel();
    background.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_was_acknowledged_while_degraded_is_served_after_redis_returns() {
    let redis = RedisServer::start();
    let cache = tiered(&redis.url(), "swarm-test:");
    let stop = CancellationToken::new();
    let background = tokio::spawn(cache.clone().run_background(stop.clone()));
    let minute = Duration::from_secs(60);
    cache.set("k", b"old", minute).await;
    cache.set("doomed", b"x", minute).await;
    cache.set("ns:a", b"1", minute).await;
    let mut invalidations = cache.subscribe();

    // Redis stops answering but keeps what it stores, as a persisted Redis across a blip.
    redis.pause();
    cache.set("k", b"new", minute).await;
    assert!(cache.is_degraded());
    cache.delete("doomed").await;
    cache.set("fresh", b"during", minute).await;
    cache.delete_prefix("ns:").await;
    cache.set("ns:b", b"2", minute).await;
    redis.resume();

    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.is_degraded() {
        assert!(
            Instant::now() < deadline,
            "the cache did not go back to redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another replica reads Redis alone: it sees what this one acknowledged.
    let other = tiered(&redis.url(), "swarm-test:");
    for reader in [&cache, &other] {
        let value =
            |key: &'static str| async move { reader.get(key).await.map(|entry| entry.value) };
        assert_eq!(
            value("k").await.as_deref(),
            Some(&b"new"[..]),
            "overwritten"
        );
        assert_eq!(value("doomed").await, None, "deleted");
        assert_eq!(value("fresh").await.as_deref(), Some(&b"during"[..]));
        assert_eq!(value("ns:a").await, None, "deleted with its prefix");
        assert_eq!(value("ns:b").await.as_deref(), Some(&b"2"[..]));
    }
    let flush = Invalidation {
        key: String::new(),
        is_prefix: true,
    };
    let told = tokio::time::timeout(Duration::from_secs(2), async {
        while invalidations.recv().await.unwrap() != flush {}
    })
    .await;
    assert!(told.is_ok(), "near caches were not told to drop everything");

    stop.cancel();
    background.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_over_tls_is_trusted_through_the_configured_authority_only() {
    let certificates = TestCertificates::new();
    let redis = RedisServer::start_tls(&certificates);
    assert!(redis.url().starts_with("rediss://"));
    let over_tls = |ca: Option<Vec<u8>>| {
        let client = redis_client(&redis.url(), ca).unwrap();
        let backend = RedisBackend::new(client, "swarm-test:", Duration::from_secs(2)).unwrap();
        TieredCache::new(MemoryBackend::new(8 * MIB), Some(backend))
    };

    let trusting = over_tls(Some(certificates.ca_pem.clone().into_bytes()));
    trusting.set("k", b"sealed", Duration::from_secs(60)).await;
    let stats = trusting.stats().await;
    assert_eq!((stats.backend, stats.degraded), ("redis", false));
    assert_eq!(stats.entries, 1, "the entry is in redis");
    assert_eq!(trusting.get("k").await.unwrap().value, b"sealed");

    // The system's authorities do not know the test's: the handshake fails, and the cache
    // answers from memory rather than trust an unverified server.
    let doubting = over_tls(None);
    doubting
        .set("k", b"unsealed", Duration::from_secs(60))
        .await;
    assert!(doubting.is_degraded());
    assert_eq!(trusting.get("k").await.unwrap().value, b"sealed");
}

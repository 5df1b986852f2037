//! End to end through the REST gateway: the cache routes, and health while the cache's Redis
//! dies (degraded, still answering) and comes back.

use std::time::{Duration, Instant};

use serde_json::json;
use swarm_e2e::{TestStack, assert_error};
use swarm_kit::testing::{Backend, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_are_stored_read_and_deleted() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let value = json!({"model": "small", "tools": ["search"], "n": 1.5});
    let stored = swarm
        .send(
            reqwest::Method::PUT,
            "/api/cache/agent:7:config",
            Some(json!({"value": value, "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(stored.0, 204, "{}", stored.1);
    let (status, read) = swarm.get("/api/cache/agent:7:config").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&read["key"], &read["value"]),
        (&json!("agent:7:config"), &value)
    );
    let left = read["ttl_seconds_remaining"].as_u64().unwrap();
    assert!((58..=60).contains(&left), "{left}");

    assert_error(
        &swarm.get("/api/cache/nothing-here").await,
        404,
        "not_found",
    );
    for bad in [
        json!({}),
        json!({"value": 1, "ttl_seconds": 0}),
        json!({"value": 1, "extra": 2}),
    ] {
        let answer = swarm
            .send(reqwest::Method::PUT, "/api/cache/k", Some(bad))
            .await;
        assert_error(&answer, 400, "invalid_argument");
    }
    let deleted = swarm
        .send(reqwest::Method::DELETE, "/api/cache/agent:7:config", None)
        .await;
    assert_eq!(deleted.0, 204);
    assert_error(
        &swarm.get("/api/cache/agent:7:config").await,
        404,
        "not_found",
    );

    let (status, stats) = swarm.get("/api/cache/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&stats["hits"], &stats["misses"], &stats["backend"]),
        (&json!(1), &json!(2), &json!("memory"))
    );
    assert!((stats["hit_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_degraded_not_down_while_redis_is_gone() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let swarm = TestStack::start_with(Backend::Sqlite, move |config| {
        config.cache.redis_url = Some(url);
    })
    .await;
    let (status, health) = swarm.get("/health").await;
    assert_eq!(
        (status, &health["status"], &health["cache"]),
        (200, &json!("healthy"), &json!("redis")),
        "{health}"
    );
    swarm
        .send(
            reqwest::Method::PUT,
            "/api/cache/kept",
            Some(json!({"value": "v"})),
        )
        .await;

    redis.kill();
    let started = Instant::now();
    let (status, read) = swarm.get("/api/cache/kept").await;
    assert_eq!(
        (status, &read["value"]),
        (200, &json!("v")),
        "the memory tier answers"
    );
    let (status, health) = swarm.get("/health").await;
    assert_eq!(
        (status, &health["status"], &health["cache"]),
        (200, &json!("degraded"), &json!("memory")),
        "{health}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let _back = RedisServer::start_on(redis.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = swarm.get("/health").await;
        if health["status"] == "healthy" {
            assert_eq!(health["cache"], "redis");
            break;
        }
        assert!(Instant::now() < deadline, "still {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_anywhere_evicts_every_near_copy() {
    use swarm_kit::cache_client::CacheClient;
    let swarm = TestStack::start(Backend::Sqlite).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let near = |_: ()| {
        CacheClient::new(
            &swarm.stack.cache_url(),
            "agents:",
            100,
            Duration::from_secs(60),
            stop.clone(),
            &swarm_kit::service_auth::ServiceCredentials::new(Some(swarm.service_token.clone())),
        )
        .unwrap()
    };
    let (a, b) = (near(()), near(()));
    // Let both subscribe to invalidations.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.set(
        "agents:1:config",
        b"{\"v\":1}".to_vec(),
        Duration::from_secs(60),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            b.get("agents:1:config").await.as_deref(),
            Some(&b"{\"v\":1}"[..])
        );
    }
    let (_, stats) = swarm.get("/api/cache/stats").await;
    assert_eq!(
        stats["hits"], 1,
        "b asked the service once and then served its near copy"
    );
    // A change through a evicts b's near copy within milliseconds.
    a.invalidate_prefix("agents:1:").await;
    let started = Instant::now();
    loop {
        if b.get("agents:1:config").await.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "b still serves its stale copy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_through_the_client_each_get_their_own_answer() {
    use swarm_kit::cache_client::CacheClient;
    let redis = RedisServer::start();
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.cache.redis_url = Some(redis.url());
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let token = swarm_kit::service_auth::ServiceCredentials::new(Some(swarm.service_token.clone()));
    // No near cache: every get goes to the cache service, in shared lookups under this load.
    let client = CacheClient::new(
        &swarm.stack.cache_url(),
        "pipelined:",
        0,
        Duration::ZERO,
        stop.clone(),
        &token,
    )
    .unwrap();
    for n in (0..400).step_by(2) {
        let value = format!("value {n}").into_bytes();
        client
            .set(&format!("pipelined:{n}"), value, Duration::from_secs(60))
            .await;
    }
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..64 {
        let client = client.clone();
        readers.spawn(async move {
            for n in (reader..400).step_by(64) {
                let found = client.get(&format!("pipelined:{n}")).await;
                let expected = (n % 2 == 0).then(|| format!("value {n}").into_bytes());
                assert_eq!(found.as_deref(), expected.as_deref(), "key {n}");
            }
        });
    }
    readers.join_all().await;
    let (_, stats) = swarm.get("/api/cache/stats").await;
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(200), Some(200))
    );

    // A cache service that is gone is a miss at once, not a wait.
    swarm.stop().await;
    let started = Instant::now();
    assert_eq!(client.get("pipelined:0").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_delete_finishes_and_is_announced_when_its_caller_gives_up() {
    use swarm_proto::cache::v1 as pb;
    use swarm_proto::cache::v1::cache_service_client::CacheServiceClient;
    let redis = RedisServer::start();
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.cache.redis_url = Some(redis.url());
    })
    .await;
    let cache = CacheServiceClient::new(swarm.service_channel(&swarm.stack.cache_url()));
    // Enough entries in Redis that walking them takes far longer than the caller will wait.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..32 {
        let mut cache = cache.clone();
        writers.spawn(async move {
            for n in 0..500 {
                cache
                    .set(pb::SetRequest {
                        key: format!("bulk:{writer}:{n}"),
                        value: b"x".to_vec(),
                        ttl_seconds: 600,
                        namespace: pb::Namespace::internal(),
                    })
                    .await
                    .unwrap();
            }
        });
    }
    writers.join_all().await;
    let mut invalidations = cache
        .clone()
        .watch_invalidations(pb::WatchInvalidationsRequest {
            prefix: "bulk:".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut hasty = tonic::Request::new(pb::DeletePrefixRequest {
        prefix: "bulk:".into(),
        namespace: pb::Namespace::internal(),
    });
    hasty.set_timeout(Duration::from_millis(1));
    let gave_up = cache.clone().delete_prefix(hasty).await;
    assert!(gave_up.is_err(), "the caller gave up before the walk ended");

    let announced = tokio::time::timeout(Duration::from_secs(5), invalidations.message())
        .await
        .expect("the delete was announced")
        .unwrap()
        .unwrap();
    assert_eq!(
        (announced.key.as_str(), announced.is_prefix),
        ("bulk:", true)
    );
    let left = cache
        .clone()
        .get_many(pb::GetManyRequest {
            keys: vec!["bulk:0:0".into(), "bulk:31:499".into()],
            namespace: pb::Namespace::internal(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(left.entries.iter().all(|entry| !entry.found), "{left:?}");
    swarm.stop().await;
}

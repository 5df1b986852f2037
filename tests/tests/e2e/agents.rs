//! End to end through the REST gateway: the agent registry (register, read, list, update,
//! heartbeat, config, delete) and how claims depend on it (unknown and offline agents).

use std::time::Duration;

use serde_json::json;
use swarm_e2e::{TestStack, assert_error};
use swarm_kit::testing::Backend;
use swarm_proto::cache::v1 as cache_pb;
use swarm_proto::cache::v1::cache_service_client::CacheServiceClient;

/// A reader that read an agent's config just before an update may store it in the cache just
/// after the update's invalidation; no lock prevents that race. The invalidation is repeated a
/// second later, so the old config stays a moment, not for the cache's five minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_config_a_racing_reader_stored_is_cleared_within_seconds() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (status, agent) = swarm
        .post("/api/agents", json!({"name": "racer", "config": {"v": 1}}))
        .await;
    assert_eq!(status, 201, "{agent}");
    let id = agent["id"].as_str().unwrap();
    let update = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/agents/{id}"),
            Some(json!({"config": {"v": 2}})),
        )
        .await;
    assert_eq!(update.0, 200, "{}", update.1);
    // What the racing reader stores, under the key the registry caches configs at (in the
    // services' own namespace, which only a service reaches).
    let mut cache = CacheServiceClient::new(swarm.service_channel(&swarm.stack.cache_url()));
    cache
        .set(cache_pb::SetRequest {
            key: format!("agents:{id}:config"),
            value: br#"{"v":1}"#.to_vec(),
            ttl_seconds: 300,
            namespace: cache_pb::Namespace::internal(),
        })
        .await
        .expect("a service writes its own entries");
    let path = format!("/api/agents/{id}/config");
    let config = || swarm.get(&path);
    assert_eq!(
        config().await.1,
        json!({"v": 1}),
        "the race left the old config"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while config().await.1 != json!({"v": 2}) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old config outlived the repeated invalidation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_register_change_and_leave() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (status, agent) = swarm
        .post(
            "/api/agents",
            json!({"name": "scribe", "kind": "llm", "capabilities": ["write", "echo"],
                   "config": {"model": "small", "temperature": 0.2}, "max_concurrency": 3}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(
        (&agent["status"], &agent["max_concurrency"]),
        (&json!("idle"), &json!(3))
    );
    assert_eq!(agent["capabilities"], json!(["echo", "write"]));
    let id = agent["id"].as_str().unwrap().to_owned();

    assert_error(
        &swarm.post("/api/agents", json!({"name": "scribe"})).await,
        409,
        "already_exists",
    );
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "max_concurrency": 0}),
        json!({"name": "x", "config": [1]}),
        json!({"name": "x", "extra": 1}),
    ] {
        assert_error(
            &swarm.post("/api/agents", bad).await,
            400,
            "invalid_argument",
        );
    }

    let (status, read) = swarm.get(&format!("/api/agents/{id}")).await;
    assert_eq!((status, &read["name"]), (200, &json!("scribe")));
    let (status, config) = swarm.get(&format!("/api/agents/{id}/config")).await;
    assert_eq!(
        (status, config),
        (200, json!({"model": "small", "temperature": 0.2}))
    );

    swarm.register_agent("painter", &["draw"], 1).await;
    let (_, all) = swarm.get("/api/agents").await;
    assert_eq!(all["total"], 2);
    let (_, writers) = swarm.get("/api/agents/list?capability=write").await;
    assert_eq!(
        (&writers["total"], &writers["items"][0]["name"]),
        (&json!(1), &json!("scribe"))
    );
    let (_, idle) = swarm.get("/api/agents?status=idle&per_page=1").await;
    assert_eq!((&idle["total"], &idle["pages"]), (&json!(2), &json!(2)));
    assert_error(
        &swarm.get("/api/agents?status=sleepy").await,
        400,
        "invalid_argument",
    );

    let (_, echoers) = swarm.get("/api/agents?capability=echo").await;
    assert_eq!(echoers["total"], 1);
    let patch = json!({"capabilities": ["write"], "config": {"model": "large"}});
    let response = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/agents/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(response.0, 200, "{}", response.1);
    assert_eq!(
        (&response.1["capabilities"], &response.1["kind"]),
        (&json!(["write"]), &json!("llm"))
    );
    let (_, config) = swarm.get(&format!("/api/agents/{id}/config")).await;
    assert_eq!(
        config,
        json!({"model": "large"}),
        "an update is visible at once"
    );
    let clash = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/agents/{id}"),
            Some(json!({"name": "painter"})),
        )
        .await;
    assert_error(&clash, 409, "already_exists");

    let (status, beat) = swarm
        .post(&format!("/api/agents/{id}/heartbeat"), json!({}))
        .await;
    assert_eq!((status, &beat["status"]), (200, &json!("idle")));

    let deleted = swarm
        .send(reqwest::Method::DELETE, &format!("/api/agents/{id}"), None)
        .await;
    assert_eq!(deleted, (204, serde_json::Value::Null));
    assert_error(
        &swarm.get(&format!("/api/agents/{id}")).await,
        404,
        "not_found",
    );
    let deleted_again = swarm
        .send(reqwest::Method::DELETE, &format!("/api/agents/{id}"), None)
        .await;
    assert_error(&deleted_again, 404, "not_found");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_need_a_registered_online_agent_and_busy_shows() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.agents.agent_ttl = Duration::from_secs(1);
        config.tasks.agent_profile_ttl = Duration::ZERO;
    })
    .await;
    let stranger = json!({"agent_id": "0190f5d2-0000-7000-8000-0000000000ff"});
    assert_error(
        &swarm.post("/api/tasks/claim", stranger).await,
        404,
        "not_found",
    );

    let agent = swarm.register_agent("solo", &[], 1).await;
    let spare = swarm.register_agent("spare", &[], 2).await;
    swarm.post("/api/tasks", json!({"title": "one"})).await;
    swarm.post("/api/tasks", json!({"title": "two"})).await;
    let claimed = swarm.claim(&agent, 5).await;
    assert_eq!(claimed.len(), 1, "max_concurrency is 1");
    let (_, busy) = swarm.get(&format!("/api/agents/{agent}")).await;
    assert_eq!(
        (&busy["status"], &busy["active_tasks"]),
        (&json!("busy"), &json!(1))
    );
    let (_, busy_list) = swarm.get("/api/agents?status=busy").await;
    assert_eq!(
        (&busy_list["total"], &busy_list["items"][0]["id"]),
        (&json!(1), &json!(agent))
    );
    let (_, idle_list) = swarm.get("/api/agents?status=idle").await;
    assert_eq!(
        (&idle_list["total"], &idle_list["items"][0]["id"]),
        (&json!(1), &json!(spare))
    );
    let (_, past_the_end) = swarm.get("/api/agents?status=idle&page=2&per_page=1").await;
    assert_eq!(
        (
            &past_the_end["total"],
            &past_the_end["pages"],
            &past_the_end["items"]
        ),
        (&json!(1), &json!(1), &json!([]))
    );

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, offline) = swarm.get(&format!("/api/agents/{agent}")).await;
    assert_eq!(offline["status"], "offline");
    let refused = swarm
        .post("/api/tasks/claim", json!({"agent_id": agent}))
        .await;
    assert_error(&refused, 409, "failed_precondition");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capability_change_reaches_claims_at_once() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        // Long enough that only an invalidation can explain a prompt change.
        config.tasks.agent_profile_ttl = Duration::from_secs(30);
    })
    .await;
    let agent = swarm.register_agent("learner", &["read"], 1).await;
    let (_, task) = swarm
        .post(
            "/api/tasks",
            json!({"title": "write it", "required_capabilities": ["write"]}),
        )
        .await;
    let none = swarm.claim(&agent, 1).await;
    assert!(
        none.is_empty(),
        "the agent cannot write yet (and its profile is now cached)"
    );

    let patch = json!({"capabilities": ["read", "write"]});
    let patched = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/agents/{agent}"),
            Some(patch),
        )
        .await;
    assert_eq!(patched.0, 200);
    let changed = std::time::Instant::now();
    loop {
        let claimed = swarm.claim(&agent, 1).await;
        if claimed.first().map(|claimed| &claimed["id"]) == Some(&task["id"]) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_millis(500),
            "the claim still saw the old capabilities"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    swarm.stop().await;
}

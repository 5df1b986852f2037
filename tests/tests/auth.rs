//! Authentication and authorization end to end: keys by role through the admin route, a
//! client that sees only its own tasks, an agent key bound to its agent, revocation, rate
//! limits with `Retry-After`, open health and metrics routes, and `SWARM_AUTH=off`.

use serde_json::json;
use swarm_e2e::{TestStack, answer, assert_error, send_with};
use swarm_gateway::auth::Rate;
use swarm_kit::testing::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_decide_who_may_do_what() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);

    // No key, a malformed one, an unknown one: 401 with the envelope.
    let anonymous = reqwest::Client::new();
    let (status, body) = send_with(&anonymous, get.clone(), swarm.url("/api/tasks"), None).await;
    assert_error(&(status, body), 401, "unauthenticated");
    let stranger = swarm_e2e::client_with_key("swarm_not_a_key_at_all_0000000000000000");
    assert_error(
        &send_with(&stranger, get.clone(), swarm.url("/api/tasks"), None).await,
        401,
        "unauthenticated",
    );
    // Health and the API's own description stay open.
    assert_eq!(
        send_with(&anonymous, get.clone(), swarm.url("/health"), None)
            .await
            .0,
        200
    );

    // Two clients: each sees only its own tasks; another's is 404, never 403.
    let ada = swarm.client_for("ada", "client", None).await;
    let bob = swarm.client_for("bob", "client", None).await;
    let (status, adas) = send_with(
        &ada,
        post.clone(),
        swarm.url("/api/tasks"),
        Some(json!({"title": "ada's"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        adas["user_id"], "ada",
        "a client's tasks are recorded under its name"
    );
    let ada_task = adas["id"].as_str().unwrap().to_owned();
    let (status, _) = send_with(
        &bob,
        post.clone(),
        swarm.url("/api/tasks"),
        Some(json!({"title": "bob's"})),
    )
    .await;
    assert_eq!(status, 201);
    let task_url = swarm.url(&format!("/api/tasks/{ada_task}"));
    assert_eq!(
        send_with(&ada, get.clone(), task_url.clone(), None).await.0,
        200
    );
    assert_error(
        &send_with(&bob, get.clone(), task_url.clone(), None).await,
        404,
        "not_found",
    );
    assert_error(
        &send_with(&bob, post.clone(), format!("{task_url}/cancel"), None).await,
        404,
        "not_found",
    );
    assert_error(
        &send_with(
            &bob,
            post.clone(),
            format!("{task_url}/messages"),
            Some(json!({"sender": "bob", "content": "hi"})),
        )
        .await,
        404,
        "not_found",
    );
    let (_, listed) = send_with(&bob, get.clone(), swarm.url("/api/tasks"), None).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["title"], "bob's");
    assert_error(
        &send_with(&bob, get.clone(), swarm.url("/api/tasks?user_id=ada"), None).await,
        403,
        "permission_denied",
    );
    let (status, _) = send_with(
        &ada,
        post.clone(),
        format!("{task_url}/messages"),
        Some(json!({"sender": "ada", "content": "mine"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, bobs_messages) = send_with(&bob, get.clone(), swarm.url("/api/messages"), None).await;
    assert_eq!(
        bobs_messages["total"], 0,
        "recent messages are a client's own"
    );
    // A client may not claim, manage agents or keys.
    assert_error(
        &send_with(&ada, get.clone(), swarm.url("/api/agents"), None).await,
        403,
        "permission_denied",
    );
    assert_error(
        &send_with(
            &ada,
            post.clone(),
            swarm.url("/api/keys"),
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await,
        403,
        "permission_denied",
    );

    // Agent keys act for their own agent only.
    let first = swarm.register_agent("first", &[], 1).await;
    let second = swarm.register_agent("second", &[], 1).await;
    let first_key = swarm
        .client_for("first-worker", "agent", Some(&first))
        .await;
    let second_key = swarm
        .client_for("second-worker", "agent", Some(&second))
        .await;
    let (status, claimed) = send_with(
        &first_key,
        post.clone(),
        swarm.url("/api/tasks/claim"),
        Some(json!({"agent_id": first})),
    )
    .await;
    assert_eq!(status, 200);
    let held = claimed["tasks"][0]["id"].as_str().unwrap().to_owned();
    assert_error(
        &send_with(
            &first_key,
            post.clone(),
            swarm.url("/api/tasks/claim"),
            Some(json!({"agent_id": second})),
        )
        .await,
        403,
        "permission_denied",
    );
    // Completing a task leased to another agent: refused with its own key (409, not the
    // holder) and with the other agent's id (403, not its agent).
    let complete = swarm.url(&format!("/api/tasks/{held}/complete"));
    assert_error(
        &send_with(
            &second_key,
            post.clone(),
            complete.clone(),
            Some(json!({"agent_id": second})),
        )
        .await,
        409,
        "failed_precondition",
    );
    assert_error(
        &send_with(
            &second_key,
            post.clone(),
            complete.clone(),
            Some(json!({"agent_id": first})),
        )
        .await,
        403,
        "permission_denied",
    );
    assert_eq!(
        send_with(
            &first_key,
            post.clone(),
            complete,
            Some(json!({"agent_id": first}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send_with(
            &first_key,
            post.clone(),
            swarm.url(&format!("/api/agents/{first}/heartbeat")),
            None
        )
        .await
        .0,
        200
    );
    assert_error(
        &send_with(
            &first_key,
            post.clone(),
            swarm.url(&format!("/api/agents/{second}/heartbeat")),
            None,
        )
        .await,
        403,
        "permission_denied",
    );
    assert_error(
        &send_with(
            &first_key,
            post.clone(),
            swarm.url("/api/tasks"),
            Some(json!({"title": "nope"})),
        )
        .await,
        403,
        "permission_denied",
    );

    // Keys list without secrets; a revoked key is refused at once.
    let (status, keys) = swarm.get("/api/keys").await;
    assert_eq!(status, 200);
    let items = keys["items"].as_array().unwrap();
    assert!(items.iter().all(
        |key| key.get("key").is_none() && key["prefix"].as_str().unwrap().starts_with("swarm_")
    ));
    let bob_key = items.iter().find(|key| key["name"] == "bob").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = swarm
        .send(
            reqwest::Method::DELETE,
            &format!("/api/keys/{bob_key}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_error(
        &send_with(&bob, get.clone(), swarm.url("/api/tasks"), None).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &swarm
            .send(
                reqwest::Method::DELETE,
                "/api/keys/00000000-0000-0000-0000-000000000000",
                None,
            )
            .await,
        404,
        "not_found",
    );
    assert_error(
        &swarm
            .post("/api/keys", json!({"name": "x", "role": "agent"}))
            .await,
        400,
        "invalid_argument",
    );
    assert_error(
        &swarm
            .post("/api/keys", json!({"name": "x", "role": "root"}))
            .await,
        400,
        "invalid_argument",
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_key_has_its_own_rate() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.gateway.rate = Rate {
            per_second: 1.0,
            burst: 3,
        };
    })
    .await;
    let client = swarm.client_for("hasty", "client", None).await;
    let url = swarm.url("/api/tasks");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = client.get(&url).send().await.unwrap();
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&wait));
            let (_, body) = answer(response).await;
            assert_eq!(body["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let other = swarm.client_for("patient", "client", None).await;
    assert_eq!(
        other.get(&url).send().await.unwrap().status(),
        200,
        "another key is not limited"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_off_lets_everyone_in() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| config.gateway.auth = false).await;
    let anonymous = reqwest::Client::new();
    let (status, _) = send_with(
        &anonymous,
        reqwest::Method::POST,
        swarm.url("/api/tasks"),
        Some(json!({"title": "open"})),
    )
    .await;
    assert_eq!(status, 201);
    swarm.stop().await;
}

//! Authentication and authorization end to end: keys by role through the admin route, a
//! client that sees only its own tasks, an agent key bound to its agent, revocation, `HEAD`
//! held to the checks of `GET`, rate limits with `Retry-After`, open health and metrics routes,
//! `SWARM_AUTH=off`, and isolation on both backends: tenants' idempotency keys and cache
//! entries, the services' own cache entries out of every caller's reach, agents squaring what
//! they hold, repeated reports.

use serde_json::json;
use swarm_e2e::{TestStack, answer, assert_error, read_events, send_with};
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

/// The router answers `HEAD` with a route's `GET` handler, so `HEAD` passes the same checks:
/// every keyed route refuses it without a key, and a key reaches no more than with `GET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_requests_pass_the_checks_of_get() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, document) = swarm.get("/api/openapi.json").await;
    let anonymous = reqwest::Client::new();
    let mut keyed = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else {
            continue;
        };
        if get.get("security").is_none() {
            continue;
        }
        let url = swarm.url(
            &path
                .replace("{id}", "0190f5d2-0000-7000-8000-00000000abcd")
                .replace("{key}", "some-key"),
        );
        let status = anonymous.head(&url).send().await.unwrap().status();
        assert_eq!(status, 401, "HEAD {path} without a key");
        keyed += 1;
    }
    assert!(keyed >= 15, "{keyed} keyed GET routes");

    let ada = swarm.client_for("ada", "client", None).await;
    let head = |path: &str| ada.head(swarm.url(path)).send();
    assert_eq!(head("/api/keys").await.unwrap().status(), 403);
    assert_eq!(head("/api/metrics").await.unwrap().status(), 403);
    let own = head("/api/tasks").await.unwrap();
    assert_eq!(own.status(), 200);
    assert!(
        own.bytes().await.unwrap().is_empty(),
        "HEAD answers no body"
    );
    swarm.stop().await;
}

/// An agent watching a task it holds sees its own attempt to the end, and nothing of the next
/// attempt, which another agent runs: its watch ends when the task leaves its hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agents_watch_ends_when_the_task_leaves_its_hands() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "relay"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let first = swarm.register_agent("first", &[], 1).await;
    let second = swarm.register_agent("second", &[], 1).await;
    let first_key = swarm
        .client_for("first-worker", "agent", Some(&first))
        .await;
    assert_eq!(swarm.claim(&first, 1).await[0]["id"], id.as_str());
    let watch = first_key
        .get(swarm.url(&format!("/api/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let (status, failed) = swarm
        .post(
            &format!("/api/tasks/{id}/fail"),
            json!({"agent_id": first, "error": "try elsewhere", "retryable": true}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    // The retry waits out its backoff before another agent may claim it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while swarm.claim(&second, 1).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry is claimable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, _) = swarm
        .post(
            &format!("/api/tasks/{id}/progress"),
            json!({"agent_id": second, "percent": 50, "message": "second's work"}),
        )
        .await;
    assert_eq!(status, 200);

    // The watch ends once the task left the agent.
    let (text, seen) = read_events(watch, std::time::Duration::from_secs(10)).await;
    assert!(!seen.is_empty(), "{text}");
    for change in &seen {
        assert_eq!(change["agent_id"], first.as_str(), "{change}");
    }
    assert!(
        !text.contains(&second) && !text.contains("second's work"),
        "{text}"
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
async fn task_watches_are_bounded_per_key_and_in_total() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.gateway.max_streams_per_key = 2;
        config.tasks.max_watchers = 3;
    })
    .await;
    let ada = swarm.client_for("ada", "client", None).await;
    let bob = swarm.client_for("bob", "client", None).await;
    let watch_url = |task: &serde_json::Value| {
        swarm.url(&format!(
            "/api/tasks/{}/events",
            task["id"].as_str().unwrap()
        ))
    };
    let (_, adas) = post_as(&swarm, &ada, "/api/tasks", json!({"title": "ada's"})).await;
    let (_, bobs) = post_as(&swarm, &bob, "/api/tasks", json!({"title": "bob's"})).await;
    let open = async |client: &reqwest::Client, url: &str| client.get(url).send().await.unwrap();

    let mut adas_watches = vec![
        open(&ada, &watch_url(&adas)).await,
        open(&ada, &watch_url(&adas)).await,
    ];
    assert!(adas_watches.iter().all(|watch| watch.status() == 200));
    let (status, refused) = answer(open(&ada, &watch_url(&adas)).await).await;
    assert_eq!(status, 429, "a key past its share: {refused}");
    assert_eq!(refused["error"]["code"], "rate_limited");

    let bobs_watch = open(&bob, &watch_url(&bobs)).await;
    assert_eq!(bobs_watch.status(), 200, "another key has its own share");
    let (status, refused) = answer(open(&bob, &watch_url(&bobs)).await).await;
    assert_eq!(status, 429, "the tasks service is full: {refused}");

    drop(adas_watches.pop());
    let mut reopened = None;
    for _ in 0..50 {
        let watch = open(&bob, &watch_url(&bobs)).await;
        if watch.status() == 200 {
            reopened = Some(watch);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a closed watch gives its place back");
    drop((adas_watches, bobs_watch, reopened));
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

/// POSTs `body` to `path` with `client`.
async fn post_as(
    swarm: &TestStack,
    client: &reqwest::Client,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    send_with(client, reqwest::Method::POST, swarm.url(path), Some(body)).await
}

/// Sends a task submission with an `Idempotency-Key`.
async fn create_keyed(
    swarm: &TestStack,
    client: &reqwest::Client,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(swarm.url("/api/tasks"))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    answer(response).await
}

/// Two clients with one idempotency key get a task each; the same client reusing its key for
/// another request is refused and creates nothing.
async fn idempotency_keys_belong_to_their_tenant(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let ada = swarm.client_for("ada", "client", None).await;
    let bob = swarm.client_for("bob", "client", None).await;
    let body = json!({"title": "invoice", "payload": {"secret": "ada's"}});
    let (status, adas) = create_keyed(&swarm, &ada, "invoice-7", body.clone()).await;
    assert_eq!(status, 201, "{adas}");
    let (status, bobs) = create_keyed(&swarm, &bob, "invoice-7", json!({"title": "mine"})).await;
    assert_eq!(status, 201, "bob's key is his own: {bobs}");
    assert_ne!(bobs["id"], adas["id"]);
    assert_eq!(
        bobs["payload"],
        serde_json::Value::Null,
        "bob never sees ada's payload"
    );
    let (status, again) = create_keyed(&swarm, &ada, "invoice-7", body).await;
    assert_eq!((status, &again["id"]), (200, &adas["id"]), "a resubmission");
    let reused = create_keyed(&swarm, &ada, "invoice-7", json!({"title": "other"})).await;
    assert_error(&reused, 409, "already_exists");
    assert!(
        reused.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request")
    );
    let (_, listed) = swarm.get("/api/tasks").await;
    assert_eq!(listed["total"], 2, "the refused reuse created nothing");
    swarm.stop().await;
}

/// No REST caller reaches the entries the services keep for themselves, and tenants do not
/// reach each other's entries.
async fn cache_entries_belong_to_their_tenant(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let agent = swarm.register_agent("target", &["echo"], 1).await;
    let (status, _) = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/agents/{agent}"),
            Some(json!({"config": {"model": "secret"}})),
        )
        .await;
    assert_eq!(status, 200);
    // The registry caches the config; a reader of the same key name finds nothing.
    assert_eq!(
        swarm.get(&format!("/api/agents/{agent}/config")).await.1["model"],
        "secret"
    );
    let ada = swarm.client_for("ada", "client", None).await;
    let bob = swarm.client_for("bob", "client", None).await;
    let cache = |key: String| swarm.url(&format!("/api/cache/{key}"));
    for client in [&ada, &swarm.http] {
        let (status, body) = send_with(
            client,
            reqwest::Method::GET,
            cache(format!("agents:{agent}:config")),
            None,
        )
        .await;
        assert_eq!(status, 404, "the agent's config is out of reach: {body}");
        // Writing the profile key claims read lands in the caller's own namespace.
        let poison = json!({"value": {"status": "offline"}, "ttl_seconds": 300});
        let (status, _) = send_with(
            client,
            reqwest::Method::PUT,
            cache(format!("agents:{agent}:profile")),
            Some(poison),
        )
        .await;
        assert_eq!(status, 204);
    }
    // The agent still claims: nothing a caller wrote reached the profile the tasks service reads.
    swarm
        .post(&format!("/api/agents/{agent}/heartbeat"), json!({}))
        .await;
    let (status, created) = swarm
        .post(
            "/api/tasks",
            json!({"title": "t", "required_capabilities": ["echo"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(swarm.claim(&agent, 1).await.len(), 1);

    // Ada's entries are hers: bob and admins see theirs under the same name.
    let put = async |client: &reqwest::Client, value: i32| {
        send_with(
            client,
            reqwest::Method::PUT,
            cache("shared-name".into()),
            Some(json!({"value": value})),
        )
        .await
    };
    assert_eq!(put(&ada, 1).await.0, 204);
    assert_eq!(put(&swarm.http, 2).await.0, 204);
    let get = async |client: &reqwest::Client| {
        send_with(
            client,
            reqwest::Method::GET,
            cache("shared-name".into()),
            None,
        )
        .await
    };
    assert_eq!(get(&ada).await.1["value"], 1);
    assert_eq!(get(&swarm.http).await.1["value"], 2);
    assert_error(&get(&bob).await, 404, "not_found");
    // The cache's statistics count every tenant's reads: an operator's figures, not a client's.
    let stats = send_with(
        &ada,
        reqwest::Method::GET,
        swarm.url("/api/cache/stats"),
        None,
    )
    .await;
    assert_error(&stats, 403, "permission_denied");
    swarm.stop().await;
}

/// An agent that lists what it holds in its heartbeats gets back a task whose claim answer it
/// lost, hears of cancellations, and may repeat a report whose answer it lost.
async fn heartbeats_square_what_an_agent_holds(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let agent = swarm.register_agent("lister", &[], 4).await;
    let other = swarm.register_agent("stranger", &[], 1).await;
    let key = swarm.client_for("lister", "agent", Some(&agent)).await;
    for title in ["kept", "lost", "cancelled"] {
        assert_eq!(
            swarm.post("/api/tasks", json!({"title": title})).await.0,
            201
        );
    }
    let (status, claimed) = post_as(
        &swarm,
        &key,
        "/api/tasks/claim",
        json!({"agent_id": agent, "max_tasks": 3}),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let id = |title: &str| {
        claimed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["title"] == title)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (kept, lost, cancelled) = (id("kept"), id("lost"), id("cancelled"));

    // The agent reads and writes the conversation of a task it holds, not of others'.
    let messages = format!("/api/tasks/{kept}/messages");
    let note = json!({"sender": "lister", "role": "agent", "content": "on it"});
    assert_eq!(post_as(&swarm, &key, &messages, note.clone()).await.0, 201);
    let (status, read) = send_with(&key, reqwest::Method::GET, swarm.url(&messages), None).await;
    assert_eq!((status, &read["total"]), (200, &json!(1)));
    let (_, elsewhere) = swarm.post("/api/tasks", json!({"title": "not held"})).await;
    let foreign = format!("/api/tasks/{}/messages", elsewhere["id"].as_str().unwrap());
    assert_error(
        &post_as(&swarm, &key, &foreign, note).await,
        404,
        "not_found",
    );

    let (status, _) = swarm
        .post(&format!("/api/tasks/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    // The claim's answer for `lost` never arrived: the agent lists the others only.
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let heartbeat = format!("/api/agents/{agent}/heartbeat");
    let (status, beat) = post_as(
        &swarm,
        &key,
        &heartbeat,
        json!({"active_tasks": [kept, cancelled]}),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel"], json!([cancelled]));
    assert_eq!(beat["id"], agent);
    let (_, lost_now) = swarm.get(&format!("/api/tasks/{lost}")).await;
    assert_eq!(lost_now["status"], "queued", "{lost_now}");
    // An agent key lists only for its own agent; a body-less heartbeat still works.
    assert_error(
        &post_as(
            &swarm,
            &key,
            &format!("/api/agents/{other}/heartbeat"),
            json!({"active_tasks": []}),
        )
        .await,
        403,
        "permission_denied",
    );
    let bare = send_with(&key, reqwest::Method::POST, swarm.url(&heartbeat), None).await;
    assert_eq!(bare.0, 200, "{}", bare.1);

    // A completion whose answer was lost is repeated: the same answer; another result: 409.
    let complete = format!("/api/tasks/{kept}/complete");
    let done = json!({"agent_id": agent, "result": {"n": 1}});
    let first = post_as(&swarm, &key, &complete, done.clone()).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let again = post_as(&swarm, &key, &complete, done).await;
    assert_eq!(again, first);
    let differs = post_as(
        &swarm,
        &key,
        &complete,
        json!({"agent_id": agent, "result": 2}),
    )
    .await;
    assert_error(&differs, 409, "failed_precondition");
    swarm.stop().await;
}

swarm_kit::conformance!(
    idempotency_keys_belong_to_their_tenant,
    cache_entries_belong_to_their_tenant,
    heartbeats_square_what_an_agent_holds,
);

//! End to end through the REST gateway: the whole stack on free ports, driven as clients and
//! agents drive it, on SQLite and on PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_e2e::{TestStack, answer, assert_error, read_events, send_with};
use swarm_kit::testing::Backend;

async fn claim_progress_complete_round_trip(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let (status, task) = swarm
        .post(
            "/api/tasks",
            json!({"title": "hello", "kind": "echo", "payload": {"text": "hi"}, "priority": 5,
                   "required_capabilities": ["echo"], "user_id": "ada"}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["status"], "queued");
    assert_eq!(task["payload"], json!({"text": "hi"}));
    let id = task["id"].as_str().unwrap().to_owned();

    let unable = swarm.register_agent("unable", &["other"], 1).await;
    assert!(swarm.claim(&unable, 1).await.is_empty());
    let agent = swarm.register_agent("echoer", &["echo"], 5).await;
    let agent = agent.as_str();
    let claimed = swarm.claim(agent, 5).await;
    let claimed = &claimed[0];
    assert_eq!(
        (claimed["id"].as_str(), &claimed["status"]),
        (Some(id.as_str()), &json!("active"))
    );
    assert_eq!(
        (&claimed["agent_id"], &claimed["attempts"]),
        (&json!(agent), &json!(1))
    );
    assert!(claimed["lease_id"].is_string());

    let (status, moved) = swarm
        .post(
            &format!("/api/tasks/{id}/progress"),
            json!({"agent_id": agent, "percent": 60, "message": "most"}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["progress"], json!({"percent": 60, "message": "most"}));

    let (status, done) = swarm
        .post(
            &format!("/api/tasks/{id}/complete"),
            json!({"agent_id": agent, "result": {"echo": "hi"}}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let (status, read) = swarm.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read["status"], "completed");
    assert_eq!(read["result"], json!({"echo": "hi"}));
    assert!(
        read["finished_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let again = swarm
        .post(
            &format!("/api/tasks/{id}/complete"),
            json!({"agent_id": agent}),
        )
        .await;
    assert_error(&again, 409, "failed_precondition");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let bad_bodies = [
        json!({}),
        json!({"title": ""}),
        json!({"title": "x".repeat(257)}),
        json!({"title": 42}),
        json!({"title": "ok", "priority": 10}),
        json!({"title": "ok", "priority": "high"}),
        json!({"title": "ok", "max_attempts": 0}),
        json!({"title": "ok", "unknown": true}),
        json!({"title": "ok", "agent_id": "not-a-uuid"}),
        json!({"title": "ok", "required_capabilities": [""]}),
        json!(["title"]),
        json!({"title": {"nested": {"deeper": [1, 2, 3]}}}),
    ];
    for body in bad_bodies {
        let answer = swarm.post("/api/tasks", body.clone()).await;
        assert_error(&answer, 400, "invalid_argument");
    }
    let raw = |body: &'static str, content_type: &'static str| {
        swarm
            .http
            .post(swarm.url("/api/tasks"))
            .header("content-type", content_type)
            .body(body)
    };
    for request in [
        raw("{\"title\": ", "application/json"),
        raw("not json", "application/json"),
        raw("{\"title\": \"ok\"}", "text/plain"),
        raw("", "application/json"),
    ] {
        let answer = answer(request.send().await.unwrap()).await;
        assert_error(&answer, 400, "invalid_argument");
    }
    let huge = json!({"title": "big", "payload": "x".repeat(3 * 1024 * 1024)});
    assert_error(
        &swarm.post("/api/tasks", huge).await,
        413,
        "payload_too_large",
    );
    let over_mebibyte = json!({"title": "big", "payload": "x".repeat(1024 * 1024 + 10)});
    assert_error(
        &swarm.post("/api/tasks", over_mebibyte).await,
        400,
        "invalid_argument",
    );

    let (status, list) = swarm.get("/api/tasks").await;
    assert_eq!(
        (status, &list["total"]),
        (200, &json!(0)),
        "nothing was created"
    );

    for path in [
        "/api/tasks?per_page=0",
        "/api/tasks?per_page=101",
        "/api/tasks?page=0",
        "/api/tasks?status=running",
        "/api/tasks?page=x",
    ] {
        assert_error(&swarm.get(path).await, 400, "invalid_argument");
    }
    assert_error(
        &swarm.get("/api/tasks/not-a-uuid").await,
        400,
        "invalid_argument",
    );
    assert_error(
        &swarm
            .get("/api/tasks/0190f5d2-0000-7000-8000-00000000abcd")
            .await,
        404,
        "not_found",
    );
    assert_error(&swarm.get("/api/nowhere").await, 404, "not_found");
    // A route called with a method it does not take: 405 with the envelope and `Allow`.
    let wrong_method = swarm
        .http
        .delete(swarm.url("/api/tasks"))
        .send()
        .await
        .unwrap();
    let allow = wrong_method.headers().get("allow").cloned();
    assert_error(&answer(wrong_method).await, 405, "method_not_allowed");
    let allow = allow.expect("a 405 lists the methods the route takes");
    assert!(allow.to_str().unwrap().contains("POST"), "{allow:?}");
    let claim = swarm
        .post(
            "/api/tasks/claim",
            json!({"agent_id": "0190f5d2-0000-7000-8000-000000000001", "wait_seconds": 61}),
        )
        .await;
    assert_error(&claim, 400, "invalid_argument");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_paginate_and_filter() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    for i in 0..25 {
        let kind = if i < 5 { "rare" } else { "common" };
        let (status, _) = swarm
            .post(
                "/api/tasks",
                json!({"title": format!("t{i}"), "kind": kind}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, page) = swarm.get("/api/tasks?page=2&per_page=10").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &page["page"],
            &page["per_page"],
            &page["total"],
            &page["pages"]
        ),
        (&json!(2), &json!(10), &json!(25), &json!(3))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(page["items"][0]["title"], "t14", "newest first");
    let (_, rare) = swarm.get("/api/tasks?kind=rare&status=queued").await;
    assert_eq!(rare["total"], 5);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_key_answers_with_the_first_task() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let submit = |title: &'static str| {
        swarm
            .http
            .post(swarm.url("/api/tasks"))
            .header("idempotency-key", "invoice-7")
            .json(&json!({"title": title}))
    };
    let (status, first) = answer(submit("first").send().await.unwrap()).await;
    assert_eq!(status, 201);
    let (status, second) = answer(submit("first").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        second, first,
        "the resubmission answers with the first task"
    );
    let (status, reused) = answer(submit("second").send().await.unwrap()).await;
    assert_error(&(status, reused), 409, "already_exists");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_lease_holder_reports_and_finished_tasks_cannot_be_cancelled() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "guarded"})).await;
    let id = task["id"].as_str().unwrap();
    let holder = swarm.register_agent("holder", &[], 1).await;
    let holder = holder.as_str();
    let intruder = "0190f5d2-0000-7000-8000-000000000002";
    let claimed = swarm.claim(holder, 1).await;
    assert_eq!(claimed[0]["id"], id);
    for (path, body) in [
        ("progress", json!({"agent_id": intruder, "percent": 1})),
        ("complete", json!({"agent_id": intruder})),
        ("fail", json!({"agent_id": intruder, "error": "nope"})),
    ] {
        let answer = swarm.post(&format!("/api/tasks/{id}/{path}"), body).await;
        assert_error(&answer, 409, "failed_precondition");
    }
    let (status, failed) = swarm
        .post(
            &format!("/api/tasks/{id}/fail"),
            json!({"agent_id": holder, "error": "bad input", "retryable": false}),
        )
        .await;
    assert_eq!(
        (status, &failed["status"], &failed["error"]),
        (200, &json!("failed"), &json!("bad input"))
    );
    assert_error(
        &swarm
            .post(&format!("/api/tasks/{id}/cancel"), json!({}))
            .await,
        409,
        "failed_precondition",
    );

    let (_, queued) = swarm
        .post("/api/tasks", json!({"title": "to cancel"}))
        .await;
    let (status, cancelled) = swarm
        .post(
            &format!("/api/tasks/{}/cancel", queued["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_stream_every_change_and_end_after_the_final_status() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "watched"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let response = swarm
        .http
        .get(swarm.url(&format!("/api/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let agent = swarm.register_agent("watcher", &[], 1).await;
    let agent = agent.as_str();
    swarm.claim(agent, 1).await;
    swarm
        .post(
            &format!("/api/tasks/{id}/progress"),
            json!({"agent_id": agent, "percent": 30}),
        )
        .await;
    swarm
        .post(
            &format!("/api/tasks/{id}/complete"),
            json!({"agent_id": agent, "result": 1}),
        )
        .await;

    let (text, events) = read_events(response, Duration::from_secs(10)).await;
    let states: Vec<(String, i64)> = events
        .iter()
        .map(|task| {
            (
                task["status"].as_str().unwrap().to_owned(),
                task["progress"]["percent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("queued".into(), 0),
            ("active".into(), 0),
            ("active".into(), 30),
            ("completed".into(), 100)
        ]
    );
    assert!(text.contains("event: task"));
    assert_error(
        &swarm
            .get("/api/tasks/0190f5d2-0000-7000-8000-00000000abcd/events")
            .await,
        404,
        "not_found",
    );
    swarm.stop().await;
}

/// A schedule creates a task on each tick until it is paused; a bad expression or zone and a
/// taken name are refused; a client reaches only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_create_tasks_on_their_ticks() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let every_second = |name: &str| json!({"name": name, "cron": "* * * * * *", "task": {"title": "tick", "kind": "ping"}});
    for bad in [
        json!({"name": "bad", "cron": "every minute", "task": {"title": "t"}}),
        json!({"name": "bad", "cron": "* * * * *", "timezone": "Moon/Base", "task": {"title": "t"}}),
        json!({"name": "bad", "cron": "* * * * *", "task": {"title": ""}}),
        json!({"name": "bad", "cron": "* * * * *", "task": {"title": "t", "delay_seconds": 5}}),
    ] {
        assert_error(
            &swarm.post("/api/schedules", bad).await,
            400,
            "invalid_argument",
        );
    }
    let (status, schedule) = swarm.post("/api/schedules", every_second("pulse")).await;
    assert_eq!(status, 201, "{schedule}");
    assert_eq!(
        (
            &schedule["timezone"],
            &schedule["paused"],
            &schedule["task"]["kind"]
        ),
        (&json!("UTC"), &json!(false), &json!("ping"))
    );
    assert!(schedule["next_run_at"].is_string());
    assert_error(
        &swarm.post("/api/schedules", every_second("pulse")).await,
        409,
        "already_exists",
    );
    let id = schedule["id"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let fired = |tasks: &Value| {
        tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|task| task["schedule_id"] == id.as_str())
            .count()
    };
    let (_, tasks) = swarm.get("/api/tasks?per_page=100").await;
    let before_pause = fired(&tasks);
    assert!(
        (2..=3).contains(&before_pause),
        "{before_pause} ticks fired"
    );
    let (_, paused) = swarm
        .post(&format!("/api/schedules/{id}/pause"), json!({}))
        .await;
    assert_eq!(paused["paused"], true);
    let (_, tasks) = swarm.get("/api/tasks?per_page=100").await;
    let at_pause = fired(&tasks);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, tasks) = swarm.get("/api/tasks?per_page=100").await;
    assert_eq!(fired(&tasks), at_pause, "a paused schedule fires nothing");
    let (_, resumed) = swarm
        .post(&format!("/api/schedules/{id}/resume"), json!({}))
        .await;
    assert_eq!(resumed["paused"], false);
    let (status, renamed) = swarm
        .send(
            reqwest::Method::PATCH,
            &format!("/api/schedules/{id}"),
            Some(json!({"name": "heartbeat", "cron": "0 9 * * MON", "timezone": "Europe/Paris"})),
        )
        .await;
    assert_eq!(
        (status, &renamed["name"]),
        (200, &json!("heartbeat")),
        "{renamed}"
    );
    assert!(
        renamed["next_run_at"]
            .as_str()
            .is_some_and(|next| next.contains("T0"))
    );

    let ada = swarm.client_for("ada", "client", None).await;
    let theirs = send_with(
        &ada,
        reqwest::Method::GET,
        swarm.url(&format!("/api/schedules/{id}")),
        None,
    )
    .await;
    assert_error(&theirs, 404, "not_found");
    let (status, mine) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url("/api/schedules"),
        Some(json!({"name": "ada's", "cron": "0 0 1 1 *", "task": {"title": "yearly"}})),
    )
    .await;
    assert_eq!((status, &mine["task"]["user_id"]), (201, &json!("ada")));
    let (_, listed) = send_with(
        &ada,
        reqwest::Method::GET,
        swarm.url("/api/schedules"),
        None,
    )
    .await;
    assert_eq!(listed["total"], 1, "a client lists only its own");
    let (_, all) = swarm.get("/api/schedules").await;
    assert_eq!(all["total"], 2);

    let (status, _) = swarm
        .send(
            reqwest::Method::DELETE,
            &format!("/api/schedules/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_error(
        &swarm.get(&format!("/api/schedules/{id}")).await,
        404,
        "not_found",
    );
    swarm.stop().await;
}

/// A workflow is created whole (or, with a cycle, not at all), runs in dependency order, and
/// reports as one; a client reaches only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_run_a_graph_of_tasks() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let cyclic = json!({"name": "loop", "tasks": [
        {"key": "a", "title": "a", "depends_on": ["b"]},
        {"key": "b", "title": "b", "depends_on": ["a"]},
    ]});
    let refused = swarm.post("/api/workflows", cyclic).await;
    assert_error(&refused, 400, "invalid_argument");
    assert!(refused.1.to_string().contains("cycle"), "{}", refused.1);
    for bad in [
        json!({"name": "w", "tasks": [{"key": "a", "title": "a", "depends_on": ["ghost"]}]}),
        json!({"name": "w", "tasks": [{"key": "a", "title": "a"}, {"key": "a", "title": "b"}]}),
        json!({"name": "w", "tasks": [{"key": "a", "title": ""}]}),
        json!({"name": "w", "tasks": [{"key": "a", "title": "a", "surprise": 1}]}),
        json!({"name": "w", "tasks": []}),
    ] {
        assert_error(
            &swarm.post("/api/workflows", bad).await,
            400,
            "invalid_argument",
        );
    }
    let unknown = swarm
        .post(
            "/api/workflows",
            json!({"name": "w", "tasks": [
                {"key": "a", "title": "a"},
                {"key": "b", "title": "b", "payload": {"n": 1}, "surprise": 1},
            ]}),
        )
        .await;
    assert_error(&unknown, 400, "invalid_argument");
    let message = unknown.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tasks[1]") && message.contains("surprise") && !message.contains("line"),
        "{message}"
    );
    assert_eq!(
        swarm.get("/api/tasks").await.1["total"],
        0,
        "nothing was created"
    );

    let (status, workflow) = swarm
        .post(
            "/api/workflows",
            json!({"name": "report", "tasks": [
                {"key": "write", "title": "write", "depends_on": ["research"], "payload": "draft"},
                {"key": "research", "title": "research", "kind": "search", "depends_on": ["plan"]},
                {"key": "plan", "title": "plan", "payload": {"topic": "queues", "depth": [1, 2.5]}},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{workflow}");
    assert_eq!(workflow["status"], "running");
    assert_eq!(
        (
            &workflow["tasks"]["plan"]["status"],
            &workflow["tasks"]["research"]["status"],
            &workflow["tasks"]["research"]["kind"],
        ),
        (&json!("queued"), &json!("waiting"), &json!("search"))
    );
    // Each task keeps the payload it was given.
    assert_eq!(
        (
            &workflow["tasks"]["plan"]["payload"],
            &workflow["tasks"]["write"]["payload"],
        ),
        (
            &json!({"topic": "queues", "depth": [1, 2.5]}),
            &json!("draft")
        )
    );
    let id = workflow["id"].as_str().unwrap().to_owned();
    assert_eq!(workflow["tasks"]["write"]["workflow_id"], id.as_str());

    let agent = swarm.register_agent("runner", &[], 1).await;
    for key in ["plan", "research", "write"] {
        let claimed = swarm.claim(&agent, 1).await;
        let task = &claimed[0];
        assert_eq!(task["id"], workflow["tasks"][key]["id"], "{key} runs next");
        swarm
            .post(
                &format!("/api/tasks/{}/complete", task["id"].as_str().unwrap()),
                json!({"agent_id": agent, "result": key}),
            )
            .await;
    }
    let (_, done) = swarm.get(&format!("/api/workflows/{id}")).await;
    assert_eq!(done["status"], "completed");
    assert!(done["finished_at"].is_string());
    assert_error(
        &swarm
            .post(&format!("/api/workflows/{id}/cancel"), json!({}))
            .await,
        409,
        "failed_precondition",
    );

    let ada = swarm.client_for("ada", "client", None).await;
    let (status, mine) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url("/api/workflows"),
        Some(json!({"name": "ada's", "tasks": [{"key": "only", "title": "only"}]})),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["tasks"]["only"]["user_id"], "ada");
    let (status, cancelled) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url(&format!(
            "/api/workflows/{}/cancel",
            mine["id"].as_str().unwrap()
        )),
        None,
    )
    .await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    let (_, adas) = send_with(
        &ada,
        reqwest::Method::GET,
        swarm.url("/api/workflows"),
        None,
    )
    .await;
    assert_eq!(adas["total"], 1, "a client lists only its own");
    assert!(
        adas["items"][0].get("tasks").is_none(),
        "lists leave tasks out"
    );
    let theirs = send_with(
        &ada,
        reqwest::Method::GET,
        swarm.url(&format!("/api/workflows/{id}")),
        None,
    )
    .await;
    assert_error(&theirs, 404, "not_found");
    let (_, all) = swarm.get("/api/workflows?status=completed").await;
    assert_eq!(all["total"], 1);
    assert_error(
        &swarm.get("/api/workflows?status=late").await,
        400,
        "invalid_argument",
    );
    swarm.stop().await;
}

/// A task that depends on others waits, then runs with their results; one whose dependency
/// fails is cancelled, naming it; a client depends only on its own tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependencies_order_the_work() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, first) = swarm.post("/api/tasks", json!({"title": "fetch"})).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let (status, then) = swarm
        .post(
            "/api/tasks",
            json!({"title": "summarise", "depends_on": [first]}),
        )
        .await;
    assert_eq!(
        (status, &then["status"]),
        (201, &json!("waiting")),
        "{then}"
    );
    let then = then["id"].as_str().unwrap().to_owned();
    let (_, waiting) = swarm.get("/api/tasks?status=waiting").await;
    assert_eq!(waiting["total"], 1);

    let agent = swarm.register_agent("worker", &[], 5).await;
    let claimed = swarm.claim(&agent, 5).await;
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].get("dependency_results").is_none());
    swarm
        .post(
            &format!("/api/tasks/{first}/complete"),
            json!({"agent_id": agent, "result": {"pages": 3}}),
        )
        .await;
    let claimed = swarm.claim(&agent, 1).await;
    assert_eq!(claimed[0]["id"], then.as_str());
    assert_eq!(
        claimed[0]["dependency_results"],
        json!({first.clone(): {"pages": 3}})
    );
    let (_, failed) = swarm
        .post(
            &format!("/api/tasks/{then}/fail"),
            json!({"agent_id": agent, "error": "no", "retryable": false}),
        )
        .await;
    assert_eq!(failed["status"], "failed");
    let orphan = swarm
        .post(
            "/api/tasks",
            json!({"title": "publish", "depends_on": [then]}),
        )
        .await;
    assert_error(&orphan, 409, "failed_precondition");
    for bad in [
        json!(["not-a-uuid"]),
        json!(["0190f5d2-0000-7000-8000-00000000abcd"]),
    ] {
        let refused = swarm
            .post("/api/tasks", json!({"title": "t", "depends_on": bad}))
            .await;
        assert_error(&refused, 400, "invalid_argument");
    }

    let ada = swarm.client_for("ada", "client", None).await;
    let (status, _) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url("/api/tasks"),
        Some(json!({"title": "borrowed", "depends_on": [first]})),
    )
    .await;
    assert_eq!(status, 400, "an admin's task is no client's dependency");
    swarm.stop().await;
}

/// A batch is created in one go, in the order sent, or (with one bad element, named by its
/// index) not at all; a client's batch is recorded under its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_are_all_or_nothing() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let mut tasks: Vec<Value> = (0..50).map(|i| json!({"title": format!("t{i}")})).collect();
    tasks[7] = json!({"title": "late", "delay_seconds": 3600});
    tasks[31] = json!({"title": ""});
    let refused = swarm
        .post("/api/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_error(&refused, 400, "invalid_argument");
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("tasks[31].title")),
        "{}",
        refused.1
    );
    assert_eq!(swarm.get("/api/tasks").await.1["total"], 0);
    for empty in [json!({"tasks": []}), json!({})] {
        assert_error(
            &swarm.post("/api/tasks/batch", empty).await,
            400,
            "invalid_argument",
        );
    }

    tasks[31] = json!({"title": "fixed"});
    let (status, created) = swarm
        .post("/api/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, 201, "{created}");
    let items = created["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    assert_eq!(
        (&items[0]["title"], &items[7]["status"], &items[31]["title"]),
        (&json!("t0"), &json!("scheduled"), &json!("fixed"))
    );
    assert_eq!(swarm.get("/api/tasks").await.1["total"], 50);

    let ada = swarm.client_for("ada", "client", None).await;
    let (status, mine) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url("/api/tasks/batch"),
        Some(json!({"tasks": [{"title": "a"}, {"title": "b", "user_id": "bob"}]})),
    )
    .await;
    assert_eq!(status, 403, "naming another user is refused: {mine}");
    let (status, mine) = send_with(
        &ada,
        reqwest::Method::POST,
        swarm.url("/api/tasks/batch"),
        Some(json!({"tasks": [{"title": "a"}, {"title": "b"}]})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(mine["items"][1]["user_id"], "ada");
    swarm.stop().await;
}

/// Delayed tasks wait as `scheduled`, may be cancelled, and come back with `retry`; every run
/// shows in the attempts history; another client reaches none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_tasks_wait_and_failed_ones_run_again_with_their_history() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    for (body, says) in [
        (
            json!({"title": "t", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}),
            "not both",
        ),
        (json!({"title": "t", "run_at": "tomorrow"}), "run_at"),
        (json!({"title": "t", "delay_seconds": 0}), "delay_seconds"),
        (
            json!({"title": "t", "delay_seconds": 31_536_001}),
            "delay_seconds",
        ),
    ] {
        let refused = swarm.post("/api/tasks", body).await;
        assert_error(&refused, 400, "invalid_argument");
        assert!(refused.1.to_string().contains(says), "{}", refused.1);
    }
    let (status, later) = swarm
        .post(
            "/api/tasks",
            json!({"title": "later", "run_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{later}");
    assert_eq!(
        (&later["status"], &later["available_at"]),
        (&json!("scheduled"), &json!("2099-01-01T00:00:00.000Z"))
    );
    let later = later["id"].as_str().unwrap().to_owned();
    let (_, scheduled) = swarm.get("/api/tasks?status=scheduled").await;
    assert_eq!(scheduled["total"], 1);
    let agent = swarm.register_agent("eager", &[], 5).await;
    assert!(
        swarm.claim(&agent, 1).await.is_empty(),
        "a scheduled task is not handed out"
    );
    assert_error(
        &swarm
            .post(&format!("/api/tasks/{later}/retry"), json!({}))
            .await,
        409,
        "failed_precondition",
    );
    let (_, cancelled) = swarm
        .post(&format!("/api/tasks/{later}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    let (status, requeued) = swarm
        .post(&format!("/api/tasks/{later}/retry"), json!({}))
        .await;
    assert_eq!((status, &requeued["status"]), (200, &json!("queued")));

    let claimed = swarm.claim(&agent, 1).await;
    assert_eq!(claimed[0]["id"], later.as_str());
    let (_, failed) = swarm
        .post(
            &format!("/api/tasks/{later}/fail"),
            json!({"agent_id": agent, "error": "disk full", "retryable": false}),
        )
        .await;
    assert_eq!(failed["status"], "failed");
    swarm
        .post(&format!("/api/tasks/{later}/retry"), json!({}))
        .await;
    swarm.claim(&agent, 1).await;
    let (status, done) = swarm
        .post(
            &format!("/api/tasks/{later}/complete"),
            json!({"agent_id": agent, "result": 42}),
        )
        .await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")));

    let (status, attempts) = swarm.get(&format!("/api/tasks/{later}/attempts")).await;
    assert_eq!(status, 200, "{attempts}");
    assert_eq!(attempts["total"], 2);
    let told: Vec<_> = attempts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["agent_id"].clone(),
                a["outcome"].clone(),
                a["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        told,
        [
            (json!(1), json!(agent), json!("failed"), json!("disk full")),
            (json!(2), json!(agent), json!("completed"), json!(null)),
        ]
    );
    let (_, second_page) = swarm
        .get(&format!("/api/tasks/{later}/attempts?page=2&per_page=1"))
        .await;
    assert_eq!(second_page["items"][0]["attempt"], 2);

    let stranger = swarm.client_for("stranger", "client", None).await;
    for (method, path) in [
        (reqwest::Method::POST, format!("/api/tasks/{later}/retry")),
        (reqwest::Method::GET, format!("/api/tasks/{later}/attempts")),
    ] {
        let answer = send_with(&stranger, method, swarm.url(&path), None).await;
        assert_error(&answer, 404, "not_found");
    }
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_queues_background_work() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (status, accepted) = swarm
        .post(
            "/api/process",
            json!({"kind": "report", "payload": {"month": 11}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "processing");
    let (status, task) = swarm
        .get(&format!(
            "/api/tasks/{}",
            accepted["task_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&task["kind"], &task["payload"], &task["status"]),
        (&json!("report"), &json!({"month": 11}), &json!("queued"))
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_are_kept_per_task_and_listed_across_tasks() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "chat"})).await;
    let id = task["id"].as_str().unwrap();
    let (status, message) = swarm
        .post(
            &format!("/api/tasks/{id}/messages"),
            json!({"sender": "ada", "content": "please hurry"}),
        )
        .await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(
        (&message["role"], &message["task_id"]),
        (&json!("user"), &json!(id))
    );
    swarm
        .post(
            &format!("/api/tasks/{id}/messages"),
            json!({"sender": "bot", "role": "agent", "content": "on it"}),
        )
        .await;
    let (_, thread) = swarm.get(&format!("/api/tasks/{id}/messages")).await;
    assert_eq!(thread["total"], 2);
    assert_eq!(thread["items"][0]["content"], "please hurry");
    let (_, recent) = swarm.get("/api/messages?per_page=1").await;
    assert_eq!(
        (&recent["items"][0]["content"], &recent["pages"]),
        (&json!("on it"), &json!(2))
    );

    let too_long = json!({"sender": "ada", "content": "x".repeat(64 * 1024 + 1)});
    assert_error(
        &swarm
            .post(&format!("/api/tasks/{id}/messages"), too_long)
            .await,
        400,
        "invalid_argument",
    );
    let bad_role = json!({"sender": "ada", "role": "boss", "content": "hi"});
    assert_error(
        &swarm
            .post(&format!("/api/tasks/{id}/messages"), bad_role)
            .await,
        400,
        "invalid_argument",
    );
    let ghost = "/api/tasks/0190f5d2-0000-7000-8000-00000000abcd/messages";
    assert_error(
        &swarm
            .post(ghost, json!({"sender": "a", "content": "b"}))
            .await,
        404,
        "not_found",
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_every_service() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (status, health) = swarm.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        (&health["status"], &health["database"]),
        (&json!("healthy"), &json!("connected"))
    );
    assert_eq!(health["services"]["tasks"], "serving");
    assert_eq!(health["services"]["agents"], "serving");
    assert_eq!(
        (&health["services"]["cache"], &health["cache"]),
        (&json!("serving"), &json!("memory"))
    );
    assert_eq!(health["services"]["agents"], "serving");
    assert_eq!(
        (&health["services"]["cache"], &health["cache"]),
        (&json!("serving"), &json!("memory"))
    );
    assert!(health["response_time_ms"].is_number());
    let (status, detailed) = swarm.get("/api/health").await;
    assert_eq!(status, 200);
    assert!(detailed["metrics"]["memory_mb"].as_f64().unwrap() > 1.0);
    let response = swarm
        .http
        .get(swarm.url("/health"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_tasks_service_is_unavailable_not_a_hang() {
    // A port that nothing listens on: bind one, note it, close it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let keys = swarm_kit::testing::TestDatabase::new(Backend::Sqlite).await;
    let mut config = swarm_gateway::GatewayConfig {
        tasks_url: format!("http://{closed}"),
        auth: false,
        ..swarm_gateway::GatewayConfig::default()
    };
    keys.url().clone_into(&mut config.database.url);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(swarm_gateway::run(listener, config, async {
        stopped.await.ok();
    }));
    let http = reqwest::Client::new();

    let started = std::time::Instant::now();
    let health = answer(http.get(format!("{base}/health")).send().await.unwrap()).await;
    assert_eq!(health.0, 503);
    assert_eq!(
        (&health.1["status"], &health.1["services"]["tasks"]),
        (&json!("unhealthy"), &json!("unreachable"))
    );
    // A pod's probes follow the pod alone: a dead service takes no gateway out of rotation.
    for (probe, said) in [("livez", "alive"), ("readyz", "ready")] {
        let answered = answer(http.get(format!("{base}/{probe}")).send().await.unwrap()).await;
        assert_eq!(answered, (200, json!({"status": said})), "{probe}");
    }
    let create = answer(
        http.post(format!("{base}/api/tasks"))
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&create, 503, "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_carry_etags_and_large_answers_are_compressed() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "tagged"})).await;
    let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let first = swarm.http.get(swarm.url(&path)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].clone();
    assert!(
        tag.to_str().unwrap().starts_with('"'),
        "a strong tag: {tag:?}"
    );

    let unchanged = swarm
        .http
        .get(swarm.url(&path))
        .header("if-none-match", tag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], tag);
    assert!(unchanged.bytes().await.unwrap().is_empty());

    swarm.post(&format!("{path}/cancel"), json!({})).await;
    let changed = swarm
        .http
        .get(swarm.url(&path))
        .header("if-none-match", tag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"], tag);

    for i in 0..20 {
        swarm
            .post("/api/tasks", json!({"title": format!("filler {i}")}))
            .await;
    }
    for encoding in ["gzip", "br", "zstd"] {
        let large = swarm
            .http
            .get(swarm.url("/api/tasks?per_page=20"))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(
            large
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            Some(encoding)
        );
    }
    let small = swarm
        .http
        .get(swarm.url("/health"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        small.headers().get("content-encoding").is_none(),
        "answers under 1 KiB stay plain"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fields_project_objects_and_pages() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "sparse"})).await;
    let id = task["id"].as_str().unwrap();
    let (status, sparse) = swarm
        .get(&format!("/api/tasks/{id}?fields=id,status"))
        .await;
    assert_eq!(
        (status, sparse),
        (200, json!({"id": id, "status": "queued"}))
    );
    let (status, page) = swarm.get("/api/tasks?fields=title").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&page["items"], &page["total"]),
        (&json!([{"title": "sparse"}]), &json!(1))
    );
    assert_error(
        &swarm
            .get(&format!("/api/tasks/{id}?fields=id,colour"))
            .await,
        400,
        "invalid_argument",
    );
    assert_error(
        &swarm.get(&format!("/api/tasks/{id}?fields=")).await,
        400,
        "invalid_argument",
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browsers_of_configured_origins_may_call() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.gateway.cors_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let from = |method, origin: &str| {
        swarm
            .http
            .request(method, swarm.url("/api/tasks"))
            .header("origin", origin)
    };
    let header = |response: &reqwest::Response, name: &str| {
        let value = response.headers().get(name)?;
        Some(value.to_str().unwrap().to_ascii_lowercase())
    };
    let preflight = from(reqwest::Method::OPTIONS, "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let allowed = header(&preflight, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));

    let read = from(reqwest::Method::GET, "https://app.example.com")
        .send()
        .await
        .unwrap();
    let exposed = header(&read, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("etag") && exposed.contains("x-request-id"));
    for answer in [&preflight, &read] {
        assert_eq!(
            header(answer, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
    }

    let stranger = from(reqwest::Method::GET, "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&stranger, "access-control-allow-origin"), None);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_describes_itself_openly() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let anonymous = reqwest::Client::new();
    let spec = anonymous
        .get(swarm.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.status(), 200);
    let spec: serde_json::Value = spec.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec["paths"]["/api/tasks/{id}"]["get"].is_object());

    let docs = anonymous.get(swarm.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.to_ascii_lowercase().contains("swagger"));
    // The page's assets come from the gateway itself, not from the internet.
    assert!(
        !page.contains("https://"),
        "no asset is fetched from elsewhere"
    );
    let script = anonymous
        .get(swarm.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_get_the_envelope_never_a_crash() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let raw = |body: Vec<u8>| {
        swarm
            .http
            .post(swarm.url("/api/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_payload = format!(
        r#"{{"title": "deep", "payload": {}1{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    for body in [
        deep.into_bytes(),
        deep_payload.into_bytes(),
        b"{\"title\": \"\xff\xfe broken utf-8\"}".to_vec(),
        b"{\"title\": ".to_vec(),
        b"\x00\x01\x02".to_vec(),
        br#"{"title": "ok", "title": "twice"}"#.to_vec(),
    ] {
        let answer = answer(raw(body).await.unwrap()).await;
        assert_error(&answer, 400, "invalid_argument");
    }
    let (status, task) = swarm
        .post(
            "/api/tasks",
            json!({"title": "résumé ✓ 🚀 \u{202e}rtl", "payload": {"ключ": "値"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(task["title"], "résumé ✓ 🚀 \u{202e}rtl");
    assert_eq!(task["payload"]["ключ"], "値");
    let (_, listed) = swarm.get("/api/tasks").await;
    assert_eq!(listed["total"], 1, "nothing else was created");
    let deep_value = format!(r#"{{"value": {}0{}}}"#, "[".repeat(200), "]".repeat(200));
    let stored = swarm
        .http
        .put(swarm.url("/api/cache/deep"))
        .header("content-type", "application/json")
        .body(deep_value)
        .send()
        .await
        .unwrap();
    assert_error(&answer(stored).await, 400, "invalid_argument");
    assert_error(&swarm.get("/api/cache/deep").await, 404, "not_found");
    swarm.stop().await;
}

/// PostgreSQL cannot store the NUL character, so no backend accepts it: every free text and
/// filter that carries one gets a 400, never a storage failure, and changes nothing.
async fn nul_characters_are_refused(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let (status, task) = swarm
        .post("/api/tasks", json!({"title": "held", "kind": "echo"}))
        .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let agent = swarm.register_agent("nul", &["echo"], 1).await;
    let claimed = swarm.claim(&agent, 1).await;
    assert_eq!(claimed[0]["id"].as_str(), Some(id.as_str()));

    let nul = "before\u{0}after";
    for (path, body) in [
        ("/api/tasks".to_owned(), json!({"title": nul})),
        (
            format!("/api/tasks/{id}/progress"),
            json!({"agent_id": agent, "percent": 50, "message": nul}),
        ),
        (
            format!("/api/tasks/{id}/fail"),
            json!({"agent_id": agent, "error": nul}),
        ),
        (
            format!("/api/tasks/{id}/messages"),
            json!({"sender": "ada", "content": nul}),
        ),
        (
            "/api/keys".to_owned(),
            json!({"name": nul, "role": "client"}),
        ),
    ] {
        assert_error(&swarm.post(&path, body).await, 400, "invalid_argument");
    }
    for path in [
        "/api/tasks?kind=a%00b",
        "/api/tasks?user_id=%00",
        "/api/agents?capability=a%00",
    ] {
        assert_error(&swarm.get(path).await, 400, "invalid_argument");
    }

    let (_, read) = swarm.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(
        (&read["status"], &read["progress"]["percent"]),
        (&json!("active"), &json!(0))
    );
    let (_, tasks) = swarm.get("/api/tasks").await;
    let (_, messages) = swarm.get(&format!("/api/tasks/{id}/messages")).await;
    let (_, keys) = swarm.get("/api/keys").await;
    assert_eq!(
        (&tasks["total"], &messages["total"], &keys["total"]),
        (&json!(1), &json!(0), &json!(1)),
        "nothing was created but the task and the admin key"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etags_can_be_switched_off() {
    let swarm = TestStack::start_with(Backend::Sqlite, |config| config.gateway.etags = false).await;
    let (_, task) = swarm.post("/api/tasks", json!({"title": "plain"})).await;
    let read = swarm
        .http
        .get(swarm.url(&format!("/api/tasks/{}", task["id"].as_str().unwrap())))
        .header("if-none-match", "\"anything\"")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(read.headers().get("etag").is_none());
    swarm.stop().await;
}

swarm_kit::conformance!(
    claim_progress_complete_round_trip,
    nul_characters_are_refused,
);

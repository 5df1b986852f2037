//! `swarm task|agents|health` against a real stack, as a person at a terminal runs them: every
//! subcommand, table and JSON output, the watch's exit code and its reconnection, refusals and
//! usage errors.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_kit::testing::{Backend, TestDatabase};

use crate::common::{json_of, run, start_stack, swarm, text};

/// An agent's part, done over HTTP: register, claim the one task, report, complete or fail.
async fn agent_call(http: &reqwest::Client, url: &str, path: &str, body: Value) -> Value {
    crate::common::api(http, reqwest::Method::POST, url, path, Some(body)).await
}

/// Works task `id` as agent `agent_id`, the oldest task queued (a claim takes the oldest
/// first): claims it, reports half done, completes it.
async fn work(http: &reqwest::Client, url: &str, agent_id: &str, id: &str) {
    agent_call(http, url, "/api/tasks/claim", json!({"agent_id": agent_id})).await;
    let progress = json!({"agent_id": agent_id, "percent": 50});
    agent_call(http, url, &format!("/api/tasks/{id}/progress"), progress).await;
    let done = json!({"agent_id": agent_id, "result": "done"});
    agent_call(http, url, &format!("/api/tasks/{id}/complete"), done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_subcommand_drives_the_api() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let stack = start_stack(&database, |_| {}).await;
    let url = stack.gateway_url();
    let http = reqwest::Client::new();

    let health = run(&url, &["health"]);
    assert!(
        health.status.success() && text(&health).contains("healthy"),
        "{}",
        text(&health)
    );

    let created = json_of(&run(
        &url,
        &[
            "task",
            "create",
            "--title",
            "hi",
            "--kind",
            "echo",
            "--payload",
            r#"{"n":1}"#,
            "--output",
            "json",
        ],
    ));
    assert_eq!(
        (&created["status"], &created["payload"]),
        (&json!("queued"), &json!({"n": 1}))
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = run(&url, &["task", "get", &id]);
    assert!(
        shown.status.success() && text(&shown).contains("echo"),
        "{}",
        text(&shown)
    );
    let listed = json_of(&run(
        &url,
        &["task", "list", "--status", "queued", "--output", "json"],
    ));
    assert_eq!(listed["total"], 1);
    let table = run(&url, &["task", "list"]);
    assert!(
        text(&table).contains("TITLE") && text(&table).contains("hi"),
        "{}",
        text(&table)
    );
    // Filters and ids reach the API as typed: encoded, never another route.
    run(
        &url,
        &["task", "create", "--title", "plus", "--kind", "c++"],
    );
    let plus = json_of(&run(
        &url,
        &["task", "list", "--kind", "c++", "--output", "json"],
    ));
    assert_eq!(
        (&plus["total"], &plus["items"][0]["title"]),
        (&json!(1), &json!("plus"))
    );
    let second = json_of(&run(
        &url,
        &[
            "task",
            "list",
            "--per-page",
            "1",
            "--page",
            "2",
            "--output",
            "json",
        ],
    ));
    assert_eq!((&second["page"], &second["total"]), (&json!(2), &json!(2)));
    let escaped = run(&url, &["task", "get", "../agents", "--output", "json"]);
    assert_eq!(escaped.status.code(), Some(1), "{}", text(&escaped));
    for dots in ["..", "."] {
        let refused = run(&url, &["task", "get", dots]);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    }

    let agent = agent_call(
        &http,
        &url,
        "/api/agents",
        json!({"name": "cli-worker", "capabilities": ["echo"]}),
    )
    .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let agents = run(&url, &["agents", "list"]);
    assert!(text(&agents).contains("cli-worker"), "{}", text(&agents));
    for (capability, total) in [("echo", 1), ("gpu", 0)] {
        let found = json_of(&run(
            &url,
            &[
                "agents",
                "list",
                "--capability",
                capability,
                "--output",
                "json",
            ],
        ));
        assert_eq!(found["total"], total, "{capability}");
    }

    // Watch a task while an agent works it: the bar ends and the exit code says completed.
    let watcher = tokio::task::spawn_blocking({
        let (url, id) = (url.clone(), id.clone());
        move || run(&url, &["task", "watch", &id])
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    work(&http, &url, &agent_id, &id).await;
    let watched = watcher.await.unwrap();
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched));

    // A cancelled task's watch exits 1; retry queues it again.
    let doomed = json_of(&run(
        &url,
        &["task", "create", "--title", "doomed", "--output", "json"],
    ));
    let doomed = doomed["id"].as_str().unwrap().to_owned();
    let cancelled = json_of(&run(&url, &["task", "cancel", &doomed, "--output", "json"]));
    assert_eq!(cancelled["status"], "cancelled");
    let watched = run(&url, &["task", "watch", &doomed]);
    assert_eq!(watched.status.code(), Some(1), "{}", text(&watched));
    let retried = json_of(&run(&url, &["task", "retry", &doomed, "--output", "json"]));
    assert_eq!(retried["status"], "queued");

    // Refusals name the API's code; usage errors exit 2.
    let missing = run(
        &url,
        &["task", "get", "0190f5d2-0000-7000-8000-00000000abcd"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("404 not_found"),
        "{}",
        text(&missing)
    );
    for usage in [
        vec!["task", "create"],
        vec!["task", "create", "--title", "t", "--payload", "{nope"],
        vec!["task", "list", "--output", "yaml"],
    ] {
        assert_eq!(run(&url, &usage).status.code(), Some(2), "{usage:?}");
    }
    let anonymous = swarm(&url)
        .args(["task", "list"])
        .env_remove("SWARM_KEY")
        .output()
        .unwrap();
    assert!(
        text(&anonymous).contains("401 unauthenticated"),
        "{}",
        text(&anonymous)
    );
    stack.stop().await.unwrap();
}

/// A TCP relay to `upstream` whose open connections can be cut at once, as a gateway restart
/// or a dropped network path cuts them; new connections go through as before.
struct Relay {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (cut, cuts) = tokio::sync::watch::channel(0);
        let accepted: std::sync::Arc<std::sync::atomic::AtomicUsize> = std::sync::Arc::default();
        let counted = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { url, cut, accepted }
    }

    /// How many connections it took so far.
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Cuts every connection open now.
    fn cut(&self) {
        self.cut.send_modify(|cuts| *cuts += 1);
    }
}

/// A watch whose event stream breaks opens it again and still ends with the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_rides_out_a_broken_event_stream() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let stack = start_stack(&database, |_| {}).await;
    let url = stack.gateway_url();
    let relay = Relay::start(stack.gateway_addr).await;
    let http = reqwest::Client::new();
    let created = json_of(&run(
        &url,
        &["task", "create", "--title", "cut", "--output", "json"],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    let watcher = tokio::task::spawn_blocking({
        let (through, id) = (relay.url.clone(), id.clone());
        move || run(&through, &["task", "watch", &id])
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.accepted() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the watch connects");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the stream's first event (the task, queued) through, then cut it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = agent_call(&http, &url, "/api/agents", json!({"name": "after-the-cut"})).await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    work(&http, &url, &agent_id, &id).await;
    let watched = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .expect("the watch ends")
        .unwrap();
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched));
    assert!(relay.accepted() >= 2, "the watch connected again");
    stack.stop().await.unwrap();
}

/// A gateway that takes the connection and never answers: each call gives up after `--timeout`
/// and says so, rather than hanging; a timeout of zero is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_gateway_never_answers_gives_up_after_its_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let commands: [&[&str]; 3] = [
        &["task", "get", "0190b6d2-0000-7000-8000-000000000000"],
        &["agents", "list"],
        &["health"],
    ];
    for command in commands {
        let url = url.clone();
        let started = std::time::Instant::now();
        let output = tokio::task::spawn_blocking(move || {
            let mut args = command.to_vec();
            args.extend(["--timeout", "1"]);
            run(&url, &args)
        })
        .await
        .unwrap();
        let waited = started.elapsed();
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains("the gateway did not answer within 1 s"),
            "{command:?}: {}",
            text(&output)
        );
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
            "{command:?} gave up after {waited:?}"
        );
    }
    let output = run(&url, &["health", "--timeout", "0"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    silent.abort();
}

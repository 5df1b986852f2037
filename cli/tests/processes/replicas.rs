//! A deployment of replicas, each role a `swarm serve` process of its own, over PostgreSQL and
//! Redis: three tasks replicas, two agents replicas and two cache replicas behind one gateway
//! whose service URLs list them all, with a `swarm agent` doing the work. Under load from
//! clients, every tasks replica serves its share of the calls; after one is killed with
//! SIGKILL, the load goes on with no client error past the moment it takes to notice, and
//! every task the clients were told was created completes.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_kit::testing::{Backend, RedisServer, TestDatabase};
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, swarm};

/// How long after the kill clients may still see errors: the calls that were in flight on the
/// killed replica.
const NOTICE: Duration = Duration::from_secs(2);
/// Concurrent clients, each creating a task and reading it back in a loop.
const CLIENTS: usize = 8;
/// How often each client reads back the task it created.
const READS: usize = 3;
/// The pause between a client's rounds, so the tasks created stay within what one agent does.
const PAUSE: Duration = Duration::from_millis(50);

/// The processes of the deployment; dropping it kills them all.
struct Deployment {
    gateway: String,
    metrics: String,
    tasks: Vec<Child>,
    others: Vec<Child>,
}

impl Deployment {
    async fn start(database_url: &str, redis_url: &str) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port()
        };
        let ports = |count: usize| (0..count).map(|_| port()).collect::<Vec<u16>>();
        let urls = |ports: &[u16]| {
            ports
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (tasks, agents, cache) = (ports(3), ports(2), ports(2));
        let (metrics, gateway) = (port(), port());
        let environment = [
            ("DATABASE_URL", database_url.to_owned()),
            ("REDIS_URL", redis_url.to_owned()),
            ("SWARM_TASKS_URL", urls(&tasks)),
            ("SWARM_AGENTS_URL", urls(&agents)),
            ("SWARM_CACHE_URL", urls(&cache)),
            ("SWARM_METRICS_URL", urls(&[metrics])),
            ("SWARM_METRICS_INTERVAL_MS", "200".to_owned()),
            ("SWARM_POLL_INTERVAL_MS", "100".to_owned()),
            ("SWARM_SERVICE_TOKEN", uuid::Uuid::new_v4().to_string()),
            ("SWARM_ADMIN_KEY", KEY.to_owned()),
            ("SWARM_RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ];
        let serve = |role: &str, port: u16| -> Child {
            Command::new(env!("CARGO_BIN_EXE_swarm"))
                .args(["serve", role, "--addr", &format!("127.0.0.1:{port}")])
                .envs(environment.iter().map(|(name, value)| (name, value)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swarm serve starts")
        };
        let mut others = vec![serve("metrics", metrics), serve("gateway", gateway)];
        others.extend(cache.iter().map(|&port| serve("cache", port)));
        others.extend(agents.iter().map(|&port| serve("agents", port)));
        let deployment = Self {
            gateway: format!("http://127.0.0.1:{gateway}"),
            metrics: format!("http://127.0.0.1:{metrics}"),
            tasks: tasks.iter().map(|&port| serve("tasks", port)).collect(),
            others,
        };
        deployment.wait_healthy().await;
        deployment
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(answer) = reqwest::get(format!("{}/health", self.gateway)).await
                && answer.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the deployment never got healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The calls each tasks replica served so far, by process id, from the metrics service's
    /// Prometheus page (each replica reports as `host:pid`).
    async fn tasks_calls(&self) -> HashMap<u32, f64> {
        let page = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut calls = HashMap::new();
        for line in page.lines().filter(|line| {
            line.starts_with("swarm_request_duration_seconds_count{")
                && line.contains(r#"service="tasks""#)
        }) {
            let instance = line
                .split(r#"swarm_instance=""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a swarm_instance label");
            let pid: u32 = instance.rsplit(':').next().unwrap().parse().unwrap();
            let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            *calls.entry(pid).or_default() += count;
        }
        calls
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.tasks.iter_mut().chain(&mut self.others) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// The tasks whose creation was acknowledged (201).
    created: Vec<String>,
    /// When each failed call failed, and how.
    errors: Vec<(Instant, String)>,
    calls: usize,
}

/// Creates a task and reads it back a few times, over and over, until `stop`.
async fn client(gateway: String, tally: Arc<Mutex<Tally>>, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let created = http
            .post(format!("{gateway}/api/tasks"))
            .bearer_auth(KEY)
            .json(&json!({"title": format!("replicated {n}"), "kind": "echo", "payload": n}))
            .send()
            .await;
        let id = match answer(created).await {
            Ok((201, task)) => task["id"].as_str().unwrap().to_owned(),
            outcome => {
                fail(&tally, format!("create: {outcome:?}"));
                continue;
            }
        };
        {
            let mut tally = tally.lock().unwrap();
            tally.created.push(id.clone());
            tally.calls += 1;
        }
        for _ in 0..READS {
            let read = http
                .get(format!("{gateway}/api/tasks/{id}"))
                .bearer_auth(KEY)
                .send()
                .await;
            match answer(read).await {
                Ok((200, task)) if task["id"] == id.as_str() => tally.lock().unwrap().calls += 1,
                outcome => fail(&tally, format!("read {id}: {outcome:?}")),
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

async fn answer(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, Value), String> {
    let response = response.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.json().await.map_err(|error| error.to_string())?;
    Ok((status, body))
}

fn fail(tally: &Mutex<Tally>, what: String) {
    tally.lock().unwrap().errors.push((Instant::now(), what));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_spread_over_replicas_and_ride_out_one_killed() {
    let database = TestDatabase::new(Backend::Postgres).await;
    let redis = RedisServer::start();
    let mut deployment = Deployment::start(database.url(), &redis.url()).await;
    // The worker's log is kept for the failure message.
    let worker_log = std::env::temp_dir().join(format!(
        "swarm-replicas-worker-{}-{}.log",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let mut worker = swarm(&deployment.gateway)
        .args([
            "agent",
            "--name",
            "replicated-worker",
            "--concurrency",
            "32",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).expect("the worker's log opens"))
        .spawn()
        .expect("swarm agent starts");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client(
                deployment.gateway.clone(),
                Arc::clone(&tally),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let calls = deployment.tasks_calls().await;
    let total: f64 = calls.values().sum();
    for replica in &deployment.tasks {
        let served = calls.get(&replica.id()).copied().unwrap_or_default();
        assert!(
            served >= total * 0.2,
            "tasks replica {} served {served} of {total} calls: {calls:?}",
            replica.id()
        );
    }
    assert!(
        tally.lock().unwrap().errors.is_empty(),
        "errors before any replica was killed: {:?}",
        tally.lock().unwrap().errors
    );

    let killed = &mut deployment.tasks[0];
    killed.kill().unwrap(); // SIGKILL: no drain, no goodbye
    killed.wait().unwrap();
    let killed_at = Instant::now();
    let calls_before = tally.lock().unwrap().calls;
    tokio::time::sleep(NOTICE + Duration::from_secs(4)).await;
    stop.cancel();
    for client in clients {
        client.await.unwrap();
    }
    let tally = Arc::into_inner(tally).unwrap().into_inner().unwrap();
    let late: Vec<_> = tally
        .errors
        .iter()
        .filter(|(at, _)| at.duration_since(killed_at) > NOTICE)
        .collect();
    assert!(
        late.is_empty(),
        "errors after the kill was noticed: {late:?}"
    );
    assert!(
        tally.calls > calls_before + 100,
        "the load went on after the kill: {} calls before, {} in all",
        calls_before,
        tally.calls
    );

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &tally.created {
        loop {
            let task: Value = http
                .get(format!("{}/api/tasks/{id}", deployment.gateway))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if task["status"] == "completed" {
                break;
            }
            assert_ne!(task["status"], "failed", "{task}");
            assert!(
                Instant::now() < deadline,
                "never completed: {task}; the worker: {:?}; its log ends:\n{}",
                worker.try_wait(),
                log_tail(&worker_log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    std::fs::remove_file(&worker_log).ok();
}

/// The last lines of the log at `path`, or why it cannot be read.
fn log_tail(path: &std::path::Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(error) => format!("(unreadable: {error})"),
    }
}

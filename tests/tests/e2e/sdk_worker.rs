//! The Rust SDK's worker under load and with long and stopped tasks: one worker with eight slots
//! runs the 2,000 tasks four producers submit at once, each exactly once; a handler that works
//! three leases long without reporting keeps its task (heartbeats renew the lease); a cancelled
//! task's handler sees its signal within two seconds; a handler that panics fails its attempt
//! instead of taking the worker down; and a busy slot gets its next task with each report.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_e2e::proxy::SilentProxy;
use swarm_e2e::{TestStack, route_figures};
use swarm_kit::testing::Backend;
use swarm_sdk::{AgentSpec, Assignment, Failure, Gateway, SdkError, Worker};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A worker running `handler` on the tasks that need `capability`, until `stop`.
struct Running {
    agent_id: String,
    stop: CancellationToken,
    run: JoinHandle<Result<(), SdkError>>,
}

impl Running {
    async fn start<H, Fut>(swarm: &TestStack, capability: &str, handler: H) -> Self
    where
        H: Fn(Assignment) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        Self::with_slots(swarm, capability, 2, handler).await
    }

    async fn with_slots<H, Fut>(swarm: &TestStack, capability: &str, slots: u32, handler: H) -> Self
    where
        H: Fn(Assignment) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let spec = AgentSpec::new(capability)
            .capability(capability)
            .max_concurrency(slots);
        Self::joined(&swarm.gateway(), spec, handler).await
    }

    /// A worker that joined through `gateway` as `spec` describes.
    async fn joined<H, Fut>(gateway: &Gateway, spec: AgentSpec, handler: H) -> Self
    where
        H: Fn(Assignment) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let worker = Worker::register(gateway, spec).await.unwrap();
        let agent_id = worker.id().to_owned();
        let stop = CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        let run = tokio::spawn(async move { worker.run(handler, until).await });
        Self {
            agent_id,
            stop,
            run,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.run.await.unwrap().unwrap();
    }
}

/// Creates a task that needs `capability`, with `fields` added; returns its path.
async fn submit(swarm: &TestStack, capability: &str, fields: Value) -> String {
    let mut body = json!({"title": capability, "required_capabilities": [capability]});
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let (status, task) = swarm.post("/api/tasks", body).await;
    assert_eq!(status, 201, "{task}");
    format!("/api/tasks/{}", task["id"].as_str().unwrap())
}

/// Reads the task at `path` until its status is `status`, for at most 20 seconds.
async fn until_status(swarm: &TestStack, path: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, task) = swarm.get(path).await;
        if task["status"] == status {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "still {} at {path}",
            task["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn two_thousand_tasks_from_four_producers_each_run_exactly_once(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let worker = Running::with_slots(&swarm, "fleet", 8, {
        let runs = Arc::clone(&runs);
        move |task: Assignment| {
            let runs = Arc::clone(&runs);
            async move {
                *runs.lock().unwrap().entry(task.id.clone()).or_default() += 1;
                Ok(task.payload)
            }
        }
    })
    .await;
    let producers = (0..4).map(|producer| {
        let swarm = &swarm;
        async move {
            let mut paths = Vec::new();
            for n in 0..500 {
                let payload = json!({"payload": {"producer": producer, "n": n}});
                paths.push(submit(swarm, "fleet", payload).await);
            }
            paths
        }
    });
    let paths: Vec<String> = futures_util::future::join_all(producers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(paths.len(), 2000);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, page) = swarm.get("/api/tasks?status=completed&per_page=1").await;
        if page["total"] == 2000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "completed so far: {}",
            page["total"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2000, "every task ran");
    assert!(runs.values().all(|count| *count == 1), "no task ran twice");
    for page in 1..=20 {
        let (_, listed) = swarm
            .get(&format!("/api/tasks?per_page=100&page={page}"))
            .await;
        for task in listed["items"].as_array().unwrap() {
            assert_eq!(
                (&task["status"], &task["attempts"]),
                (&json!("completed"), &json!(1))
            );
        }
    }
    swarm.stop().await;
}

async fn a_handler_working_three_leases_long_without_reporting_runs_once(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let worker = Running::start(&swarm, "patient", |_task: Assignment| async move {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        Ok(json!("done"))
    })
    .await;
    let path = submit(&swarm, "patient", json!({"timeout_seconds": 1})).await;
    let done = until_status(&swarm, &path, "completed").await;
    assert_eq!(
        (done["attempts"].as_i64(), &done["result"]),
        (Some(1), &json!("done"))
    );
    worker.stop().await;
    swarm.stop().await;
}

async fn a_cancelled_tasks_handler_sees_the_signal_within_two_seconds(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let seen = Arc::new(Mutex::new(None));
    let worker = Running::start(&swarm, "endless", {
        let seen = Arc::clone(&seen);
        move |task: Assignment| {
            let seen = Arc::clone(&seen);
            async move {
                task.cancelled().await;
                *seen.lock().unwrap() = Some(Instant::now());
                Ok(Value::Null)
            }
        }
    })
    .await;
    let path = submit(&swarm, "endless", json!({})).await;
    until_status(&swarm, &path, "active").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = Instant::now();
    let (status, _) = swarm.post(&format!("{path}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let deadline = cancelled_at + Duration::from_secs(5);
    let seen_at = loop {
        if let Some(at) = *seen.lock().unwrap() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the handler never saw the signal"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let delay = seen_at - cancelled_at;
    assert!(delay < Duration::from_secs(2), "signal after {delay:?}");
    worker.stop().await;
    swarm.stop().await;
}

async fn a_panicking_handler_fails_its_attempt(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    let worker = Running::start(&swarm, "fragile", |task: Assignment| async move {
        assert!(task.attempt > 1, "boom on attempt {}", task.attempt);
        Ok(json!("second time lucky"))
    })
    .await;
    let path = submit(&swarm, "fragile", json!({"max_attempts": 2})).await;
    let done = until_status(&swarm, &path, "completed").await;
    assert_eq!(done["attempts"], 2);
    let (_, attempts) = swarm.get(&format!("{path}/attempts")).await;
    let first = &attempts["items"][0];
    assert_eq!(first["outcome"], "failed", "{attempts}");
    assert_eq!(first["error"], "the handler panicked: boom on attempt 1");
    worker.stop().await;
    swarm.stop().await;
}

/// A stopping worker lets a handler that ends within its grace period finish and report; one
/// that outlasts it (and ignores its signal) is dropped, and its attempt fails as retryable,
/// so its task is queued again at once rather than after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_worker_gives_its_handlers_a_grace_period() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let spec = AgentSpec::new("graceful")
        .capability("graceful")
        .max_concurrency(2)
        .grace_period(Duration::from_secs(2));
    let worker = Running::joined(&swarm.gateway(), spec, |task: Assignment| async move {
        let millis = task.payload["millis"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(json!(millis))
    })
    .await;
    let quick = submit(&swarm, "graceful", json!({"payload": {"millis": 800}})).await;
    let endless = submit(&swarm, "graceful", json!({"payload": {"millis": 600_000}})).await;
    until_status(&swarm, &endless, "active").await;
    until_status(&swarm, &quick, "active").await;
    tokio::time::timeout(Duration::from_secs(10), worker.stop())
        .await
        .expect("the worker stops once its grace period is over");
    let (_, finished) = swarm.get(&quick).await;
    assert_eq!(
        (&finished["status"], &finished["result"]),
        (&json!("completed"), &json!(800))
    );
    let (_, released) = swarm.get(&endless).await;
    assert_eq!(
        (
            &released["status"],
            &released["error"],
            &released["attempts"]
        ),
        (
            &json!("queued"),
            &json!("worker stopped before the task finished"),
            &json!(1)
        ),
        "{released}"
    );
    swarm.stop().await;
}

/// A one-slot worker handed eight queued tasks claims once: each report brings the slot its
/// next task in the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_takes_its_next_task_with_each_report() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let mut paths = Vec::new();
    for n in 0..8 {
        paths.push(submit(&swarm, "chain", json!({"payload": n})).await);
    }
    let echo = |task: Assignment| async move { Ok(task.payload) };
    let worker = Running::with_slots(&swarm, "chain", 1, echo).await;
    for (n, path) in paths.iter().enumerate() {
        assert_eq!(until_status(&swarm, path, "completed").await["result"], n);
    }
    let finish = "/swarm.tasks.v1.TaskService/FinishTask";
    let summary = swarm
        .metrics_when(|summary| {
            route_figures(summary, "tasks", finish)
                .is_some_and(|figures| figures["total"].as_u64() >= Some(8))
        })
        .await;
    let claims = route_figures(&summary, "tasks", "/swarm.tasks.v1.TaskService/ClaimTasks")
        .map_or(0, |figures| figures["total"].as_u64().unwrap());
    assert!(claims <= 2, "{claims} claims for 8 tasks on one slot");
    worker.stop().await;
    swarm.stop().await;
}

/// A worker with more slots than one claim may take (the queue's limit is 100) claims in
/// several goes rather than being refused, and runs every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_with_more_slots_than_one_claim_takes_runs_every_task() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let batch: Vec<Value> = (0..150)
        .map(|n| json!({"title": "wide", "required_capabilities": ["wide"], "payload": n}))
        .collect();
    let (status, created) = swarm
        .post("/api/tasks/batch", json!({"tasks": batch}))
        .await;
    assert_eq!(status, 201, "{created}");
    let echo = |task: Assignment| async move { Ok(task.payload) };
    let worker = Running::with_slots(&swarm, "wide", 150, echo).await;
    for task in created["items"].as_array().unwrap() {
        let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
        let done = until_status(&swarm, &path, "completed").await;
        assert_eq!(done["result"], task["payload"]);
    }
    worker.stop().await;
    swarm.stop().await;
}

/// A worker's connection goes silent (a middlebox forgot it; nothing closes it). Each side
/// notices by its pings. The worker connects again before its agent's heartbeats lapse: the
/// agent stays online past its TTL. The gateway closes its end, which ends the claim that was
/// waiting on it, so that claim cannot take the next task for nobody: the task runs once, on its
/// first attempt; and the gateway's stop does not wait on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_gone_silent_is_replaced_by_the_worker_and_closed_by_the_gateway() {
    // The worker notices within 6 s (a ping each second, unanswered for 5 s).
    const TTL: Duration = Duration::from_secs(10);
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.agents.agent_ttl = TTL;
        config.tasks.lease_sweep_interval = Duration::from_millis(200);
        config.gateway.client_ping = Duration::from_secs(2);
    })
    .await;
    let target = swarm.base.trim_start_matches("http://").parse().unwrap();
    let proxy = SilentProxy::start(target).await;
    let gateway = Gateway {
        url: proxy.url(),
        ..swarm.gateway()
    };
    let spec = AgentSpec::new("forgotten")
        .capability("forgotten")
        .max_concurrency(2)
        .heartbeat_every(Duration::from_millis(500));
    let runs: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = {
        let runs = Arc::clone(&runs);
        move |task: Assignment| {
            runs.lock().unwrap().push(task.payload.clone());
            async move { Ok(task.payload) }
        }
    };
    let worker = Running::joined(&gateway, spec, record).await;
    let before = submit(&swarm, "forgotten", json!({})).await;
    until_status(&swarm, &before, "completed").await;

    proxy.silence();
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    let (_, agent) = swarm.get(&format!("/api/agents/{}", worker.agent_id)).await;
    assert_ne!(agent["status"], "offline", "{agent}");
    let after = submit(&swarm, "forgotten", json!({"payload": "after"})).await;
    let done = until_status(&swarm, &after, "completed").await;
    assert_eq!(
        (done["attempts"].as_u64(), &done["result"]),
        (Some(1), &json!("after"))
    );
    assert_eq!(*runs.lock().unwrap(), [json!(null), json!("after")]);
    worker.stop().await;
    tokio::time::timeout(Duration::from_secs(10), swarm.stop())
        .await
        .expect("the stack stops with the silent connection still open");
    drop(proxy);
}

swarm_kit::conformance!(
    two_thousand_tasks_from_four_producers_each_run_exactly_once,
    a_handler_working_three_leases_long_without_reporting_runs_once,
    a_cancelled_tasks_handler_sees_the_signal_within_two_seconds,
    a_panicking_handler_fails_its_attempt,
);

//! End to end with SDK workers: a fleet of agents with different capabilities works through a
//! thousand tasks of mixed requirements (each done once, by an able agent, within every
//! agent's concurrency), and an agent that dies mid-task loses it to another agent, whose
//! result counts while the dead agent's late one is refused. Tasks-service replicas: a task
//! created on one wakes a claim waiting on another, and a replica whose clock runs ten minutes
//! ahead agrees with the others on who holds what.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_e2e::{TestStack, create_over_grpc};
use swarm_kit::testing::Backend;
use swarm_proto::tasks::v1 as pb;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use swarm_sdk::{AgentSpec, Assignment, Failure, Worker};
use tokio_util::sync::CancellationToken;

/// What one agent did: tasks it ran, and the most it ran at once.
#[derive(Default)]
struct Ledger {
    running: AtomicU32,
    most_at_once: AtomicU32,
    done: Mutex<Vec<String>>,
}

async fn thousand_tasks_each_done_once_by_an_able_agent(backend: Backend) {
    const TASKS: usize = 1000;
    let swarm = TestStack::start(backend).await;
    let fleet: [(&str, &[&str], u32); 4] = [
        ("echo-a", &["echo"], 4),
        ("echo-gpu", &["echo", "gpu"], 2),
        ("sleeper", &["sleep"], 3),
        ("all-round", &["echo", "gpu", "sleep"], 1),
    ];
    let requirements: [&[&str]; 5] = [
        &[],
        &["echo"],
        &["echo", "gpu"],
        &["sleep"],
        &["gpu", "sleep"],
    ];

    let mut tasks = TaskServiceClient::new(swarm.service_channel(&swarm.stack.tasks_url()));
    let mut required: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..TASKS {
        let needs: Vec<String> = requirements[i % requirements.len()]
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let created = create_over_grpc(
            &mut tasks,
            pb::CreateTaskRequest {
                title: format!("task {i}"),
                kind: "echo".into(),
                payload_json: json!({"n": i}).to_string(),
                priority: (i % 3) as i32,
                required_capabilities: needs.clone(),
                ..Default::default()
            },
        )
        .await;
        required.insert(created.id, needs);
    }

    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    let mut agents = HashMap::new();
    for (name, capabilities, concurrency) in fleet {
        let mut spec = AgentSpec::new(name).max_concurrency(concurrency);
        spec.capabilities = capabilities.iter().map(|c| (*c).to_owned()).collect();
        let worker = Worker::register(&swarm.gateway(), spec).await.unwrap();
        let ledger = Arc::new(Ledger::default());
        agents.insert(
            worker.id().to_owned(),
            (name, capabilities, concurrency, ledger.clone()),
        );
        let stop = stop.clone();
        runs.push(tokio::spawn(async move {
            let handler = move |task: Assignment| {
                let ledger = ledger.clone();
                async move {
                    let now = ledger.running.fetch_add(1, Ordering::SeqCst) + 1;
                    ledger.most_at_once.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ledger.done.lock().unwrap().push(task.id.clone());
                    ledger.running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<Value, Failure>(task.payload)
                }
            };
            worker.run(handler, stop.cancelled_owned()).await
        }));
    }

    let started = Instant::now();
    let completed = loop {
        let page = tasks
            .list_tasks(pb::ListTasksRequest {
                status: pb::TaskStatus::Completed.into(),
                page: Some(swarm_proto::common::v1::PageRequest {
                    page: 1,
                    per_page: 1,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let completed = page.page.unwrap().total;
        if completed == TASKS as u64 || started.elapsed() > Duration::from_secs(90) {
            break completed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    assert_eq!(completed, TASKS as u64, "every task completes");

    let mut handled: HashMap<String, u32> = HashMap::new();
    for (agent_id, (name, capabilities, concurrency, ledger)) in &agents {
        let most = ledger.most_at_once.load(Ordering::SeqCst);
        assert!(
            most <= *concurrency,
            "{name} ran {most} at once, allowed {concurrency}"
        );
        let able: HashSet<&str> = capabilities.iter().copied().collect();
        let done = ledger.done.lock().unwrap().clone();
        for task_id in &done {
            *handled.entry(task_id.clone()).or_default() += 1;
            let needs = &required[task_id];
            assert!(
                needs.iter().all(|need| able.contains(need.as_str())),
                "{name} ran a task needing {needs:?}"
            );
            let task = tasks
                .get_task(pb::GetTaskRequest {
                    id: task_id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                task.agent_id.as_deref(),
                Some(agent_id.as_str()),
                "the recorded agent is the one that ran it"
            );
        }
    }
    assert_eq!(handled.len(), TASKS, "every task ran");
    assert!(handled.values().all(|runs| *runs == 1), "no task ran twice");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_agents_task_goes_to_another_and_its_late_result_is_refused() {
    const TTL: Duration = Duration::from_secs(2);
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.agents.agent_ttl = TTL;
        config.tasks.lease_sweep_interval = Duration::from_millis(200);
    })
    .await;
    let mut tasks = TaskServiceClient::new(swarm.service_channel(&swarm.stack.tasks_url()));
    let created = create_over_grpc(
        &mut tasks,
        pb::CreateTaskRequest {
            title: "long job".into(),
            kind: "echo".into(),
            payload_json: r#"{"text":"hi"}"#.into(),
            required_capabilities: vec!["echo".into()],
            ..Default::default()
        },
    )
    .await;

    let heartbeat = Duration::from_millis(300);
    let doomed = Worker::register(
        &swarm.gateway(),
        AgentSpec::new("doomed")
            .capability("echo")
            .heartbeat_every(heartbeat),
    )
    .await
    .unwrap();
    let held = doomed
        .claim(1, 0)
        .await
        .unwrap()
        .pop()
        .expect("the doomed agent gets the task");
    assert_eq!(held.id, created.id);
    drop(doomed); // dies mid-task: no completion, no more heartbeats
    let died = Instant::now();

    let survivor = Worker::register(
        &swarm.gateway(),
        AgentSpec::new("survivor")
            .capability("echo")
            .heartbeat_every(heartbeat),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move {
            survivor
                .run(
                    |task: Assignment| async move { Ok::<Value, Failure>(task.payload) },
                    stop.cancelled_owned(),
                )
                .await
        })
    };
    let finished = loop {
        let task = tasks
            .get_task(pb::GetTaskRequest {
                id: created.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if task.status() == pb::TaskStatus::Completed
            || died.elapsed() > TTL + Duration::from_secs(10)
        {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let redelivered_after = died.elapsed();
    stop.cancel();
    run.await.unwrap().unwrap();

    assert_eq!(finished.status(), pb::TaskStatus::Completed);
    assert_eq!(finished.attempts, 2, "the lost attempt counts");
    assert_ne!(finished.agent_id.as_deref(), Some(held.agent_id.as_str()));
    assert!(
        redelivered_after < TTL + Duration::from_secs(3),
        "re-delivered after {redelivered_after:?}"
    );
    let late = held.complete(&json!({"late": true})).await.unwrap_err();
    assert!(
        matches!(late, swarm_sdk::SdkError::Status(ref s) if s.code() == tonic::Code::FailedPrecondition),
        "{late}"
    );
    let after = tasks
        .get_task(pb::GetTaskRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.result_json.as_deref(),
        Some(r#"{"text":"hi"}"#),
        "the late result changed nothing"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_created_on_one_replica_wakes_a_claim_waiting_on_another() {
    // Replica A polls only every 30 s: only a PostgreSQL notification can wake it sooner.
    let swarm = TestStack::start_with(Backend::Postgres, |config| {
        config.tasks.poll_interval = Duration::from_secs(30);
    })
    .await;
    let replica_b = TasksReplica::start(&swarm, |_| {}).await;

    let agent = swarm.register_agent("waiter", &[], 1).await;
    let mut replica_a = TaskServiceClient::new(swarm.service_channel(&swarm.stack.tasks_url()));
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let claimed = replica_a
            .claim_tasks(pb::ClaimTasksRequest {
                agent_id: agent,
                max_tasks: 1,
                wait_seconds: 20,
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        (claimed, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_b = TaskServiceClient::new(swarm.service_channel(&replica_b.url));
    let created = create_over_grpc(
        &mut on_b,
        pb::CreateTaskRequest {
            title: "via b".into(),
            ..Default::default()
        },
    )
    .await;
    let (claimed, waited) = waiting.await.unwrap();
    assert_eq!(
        claimed.first().map(|t| t.id.as_str()),
        Some(created.id.as_str())
    );
    assert!(waited < Duration::from_secs(3), "woke after {waited:?}");

    replica_b.stop().await;
    swarm.stop().await;
}

/// A second tasks service over a stack's database.
struct TasksReplica {
    url: String,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), swarm_kit::RunError>>,
}

impl TasksReplica {
    /// Starts a replica configured like the stack's own, then by `tune`.
    async fn start(swarm: &TestStack, tune: impl FnOnce(&mut swarm_tasks::TasksConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = swarm_tasks::TasksConfig {
            database: swarm_kit::db::DatabaseConfig::local(8).at(swarm.database_url()),
            agents_url: swarm.stack.agents_url(),
            cache_url: swarm.stack.cache_url(),
            service_credentials: swarm_kit::service_auth::ServiceCredentials::new(Some(
                swarm.service_token.clone(),
            )),
            ..swarm_tasks::TasksConfig::default()
        };
        tune(&mut config);
        let stop = CancellationToken::new();
        let running = tokio::spawn(swarm_tasks::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));
        Self { url, stop, running }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.await.unwrap().unwrap();
    }
}

async fn a_replica_whose_clock_runs_ahead_agrees_on_leases(backend: Backend) {
    let swarm = TestStack::start(backend).await;
    // Replica B believes it is ten minutes later than it is, and sweeps leases ten times a
    // second: were it to trust its own clock, every lease would look expired to it.
    let replica_b = TasksReplica::start(&swarm, |config| {
        config.clock_skew_millis = 600_000;
        config.lease_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let agent = swarm.register_agent("steady", &[], 1).await;
    let (status, task) = swarm
        .post(
            "/api/tasks",
            json!({"title": "held", "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let claimed = swarm.claim(&agent, 1).await;
    let held = &claimed[0];
    assert_eq!(held["id"], task["id"]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let task_path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let (_, now) = swarm.get(&task_path).await;
    assert_eq!(
        now["status"], "active",
        "the skewed replica left the lease alone: {now}"
    );
    assert_eq!(now["lease_id"], held["lease_id"]);
    let (status, done) = swarm
        .post(
            &format!("{task_path}/complete"),
            json!({"agent_id": agent, "lease_id": held["lease_id"], "result": {"ok": true}}),
        )
        .await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));
    replica_b.stop().await;
    swarm.stop().await;
}

swarm_kit::conformance!(
    a_replica_whose_clock_runs_ahead_agrees_on_leases,
    thousand_tasks_each_done_once_by_an_able_agent,
);

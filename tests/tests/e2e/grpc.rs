//! End to end over gRPC: an agent's claim / progress / complete round trip against the tasks
//! service directly, the worker service on the gateway (agent keys, and finishing a task with
//! the next claim in the same call), and the health and reflection services every gRPC
//! process serves.

use std::time::Duration;

use swarm_e2e::TestStack;
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::service_auth::{ServiceCredentials, ServiceTls};
use swarm_kit::testing::Backend;
use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use swarm_proto::tasks::v1 as pb;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_claim_progress_complete_round_trip() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let mut tasks = TaskServiceClient::new(swarm.service_channel(&swarm.stack.tasks_url()));
    let mut agents = AgentServiceClient::new(swarm.service_channel(&swarm.stack.agents_url()));
    let agent = agents
        .register_agent(agents_pb::RegisterAgentRequest {
            name: "grpc-agent".into(),
            capabilities: vec!["echo".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let agent_id = agent.id.as_str();

    let created = tasks
        .create_task(pb::CreateTaskRequest {
            title: "over grpc".into(),
            payload_json: r#"{"n":1}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let id = created.task.unwrap().id;

    // A long poll that finds work at once returns at once.
    let claimed = claim_one(&mut tasks, agent_id, 5).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].status(), pb::TaskStatus::Active);
    let lease = pb::LeaseRef {
        agent_id: agent_id.into(),
        lease_id: claimed[0].lease_id.clone(),
    };

    let moved = tasks
        .report_progress(pb::ReportProgressRequest {
            id: id.clone(),
            lease: Some(lease.clone()),
            percent: 50,
            message: Some("half".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.progress.unwrap().percent, 50);

    let done = tasks
        .complete_task(pb::CompleteTaskRequest {
            id: id.clone(),
            lease: Some(lease.clone()),
            result_json: r#"{"ok":true}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), pb::TaskStatus::Completed);
    assert_eq!(done.result_json.as_deref(), Some(r#"{"ok":true}"#));

    let stale = tasks
        .complete_task(pb::CompleteTaskRequest {
            id,
            lease: Some(lease),
            result_json: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);

    let invalid = tasks
        .create_task(pb::CreateTaskRequest {
            title: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    // An empty long poll waits its time, then answers with no tasks.
    let started = std::time::Instant::now();
    let none = claim_one(&mut tasks, agent_id, 1).await.unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(1));

    let stranger = claim_one(&mut tasks, "0190f5d2-0000-7000-8000-000000000009", 0)
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::NotFound);
    swarm.stop().await;
}

/// Claims at most one task for `agent_id` straight from the tasks service, long-polling up to
/// `wait_seconds`.
async fn claim_one(
    tasks: &mut TaskServiceClient<ServiceChannel>,
    agent_id: &str,
    wait_seconds: u32,
) -> Result<Vec<pb::Task>, tonic::Status> {
    let request = pb::ClaimTasksRequest {
        agent_id: agent_id.into(),
        max_tasks: 1,
        wait_seconds,
    };
    Ok(tasks.claim_tasks(request).await?.into_inner().tasks)
}

/// The services that reflection version `$version` (a module of `tonic_reflection::pb`, whose
/// generated types each version repeats) lists on `$channel`'s port.
macro_rules! reflected {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version as pb;
        let request = pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(pb::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let answer = pb::server_reflection_client::ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream_once(request))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(pb::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("reflection {} lists services", stringify!($version));
        };
        list.service
            .into_iter()
            .map(|service| service.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_serves_health_and_reflection() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let connect = |url: String| async move {
        tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let channel = connect(swarm.stack.tasks_url()).await;
    let agents_channel = connect(swarm.stack.agents_url()).await;
    for (channel, service) in [
        (&channel, ""),
        (&channel, "swarm.tasks.v1.TaskService"),
        (&channel, swarm_kit::host::LIVENESS),
        (&agents_channel, ""),
        (&agents_channel, "swarm.agents.v1.AgentService"),
    ] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    // Without the service token, the services themselves refuse; health and reflection answer.
    let refused = TaskServiceClient::new(channel.clone())
        .get_task(pb::GetTaskRequest {
            id: "0190f5d2-0000-7000-8000-000000000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let wrong = swarm_kit::grpc::lazy_channel(
        &swarm.stack.agents_url(),
        std::time::Duration::from_secs(2),
        None,
        &swarm_kit::service_auth::ServiceCredentials::new(Some("not-the-token-at-all".into())),
    )
    .unwrap();
    let refused = AgentServiceClient::new(wrong)
        .list_agents(agents_pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let plain = |url: String| {
        tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_lazy()
    };
    let on_services: &[&str] = &["swarm.tasks.v1.TaskService", "grpc.health.v1.Health"];
    let on_gateway: &[&str] = &["swarm.worker.v1.WorkerService"];
    for (port, channel, listed) in [
        ("tasks", plain(swarm.stack.tasks_url()), on_services),
        ("gateway", plain(swarm.stack.gateway_url()), on_gateway),
    ] {
        for (version, names) in [
            ("v1", reflected!(v1, channel.clone())),
            ("v1alpha", reflected!(v1alpha, channel.clone())),
        ] {
            if port == "gateway" {
                assert!(
                    !names.iter().any(|n| n == "swarm.tasks.v1.TaskService"),
                    "the gateway lists no service behind it: {names:?}"
                );
            }
            for expected in listed {
                assert!(
                    names.iter().any(|n| n == expected),
                    "reflection {version} on the {port} port lacks {expected}: {names:?}"
                );
            }
        }
    }
    swarm.stop().await;
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter([item])
}

/// A worker with nothing but an agent key and the gateway's address joins, claims, reports
/// and heartbeats over gRPC; its key acts for its own agent only, and client keys, missing
/// keys and the services' ports without the token get nowhere.
async fn workers_need_only_an_agent_key_and_the_gateway(backend: Backend) {
    use swarm_proto::worker::v1 as worker_pb;
    use swarm_proto::worker::v1::worker_service_client::WorkerServiceClient;
    use swarm_sdk::{AgentSpec, Gateway, Worker};

    let swarm = TestStack::start(backend).await;
    let agent = swarm.register_agent("keyed", &[], 1).await;
    let other = swarm.register_agent("other", &[], 1).await;
    let (status, issued) = swarm
        .post(
            "/api/keys",
            serde_json::json!({"name": "keyed", "role": "agent", "agent_id": agent}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    let gateway = Gateway {
        url: swarm.base.clone(),
        api_key: Some(key.clone()),
    };

    // The SDK worker acts as the key's agent, declaring what it can do.
    let spec = AgentSpec::new("ignored")
        .capability("echo")
        .max_concurrency(2);
    let worker = Worker::register(&gateway, spec).await.unwrap();
    assert_eq!(worker.id(), agent);
    let (_, seen) = swarm.get(&format!("/api/agents/{agent}")).await;
    assert_eq!(
        (&seen["capabilities"], &seen["max_concurrency"]),
        (&serde_json::json!(["echo"]), &serde_json::json!(2))
    );
    let (status, task) = swarm
        .post(
            "/api/tasks",
            serde_json::json!({"title": "via gateway", "required_capabilities": ["echo"], "payload": 7}),
        )
        .await;
    assert_eq!(status, 201);
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            let echo = |task: swarm_sdk::Assignment| async move { Ok(task.payload) };
            worker.run(echo, stop.cancelled_owned()).await
        }
    });
    let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while swarm.get(&path).await.1["status"] != "completed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(swarm.get(&path).await.1["result"], 7);
    stop.cancel();
    run.await.unwrap().unwrap();
    // Restarted with an admin key under the same name, a worker resumes the same agent.
    let restarted = Worker::register(&swarm.gateway(), AgentSpec::new("keyed"))
        .await
        .unwrap();
    assert_eq!(restarted.id(), agent);
    drop(restarted);

    // The raw service: the key's own agent may beat, another may not.
    let channel = tonic::transport::Endpoint::from_shared(swarm.base.clone())
        .unwrap()
        .connect_lazy();
    let mut client = WorkerServiceClient::new(channel.clone());
    let beat = |agent_id: &str| worker_pb::HeartbeatRequest {
        agent_id: agent_id.to_owned(),
        active_tasks: Some(worker_pb::HeldTasks { ids: vec![] }),
    };
    let own = client.heartbeat(with_key(&key, beat(""))).await.unwrap();
    assert_eq!(own.get_ref().agent.as_ref().unwrap().id, agent);
    let refused = client.heartbeat(with_key(&key, beat(&other))).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    let anonymous = client.heartbeat(tonic::Request::new(beat(&agent))).await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    let (_, client_key) = swarm
        .post(
            "/api/keys",
            serde_json::json!({"name": "ada", "role": "client"}),
        )
        .await;
    let as_client = client
        .heartbeat(with_key(client_key["key"].as_str().unwrap(), beat(&agent)))
        .await;
    assert_eq!(as_client.unwrap_err().code(), tonic::Code::PermissionDenied);
    let claim_for_other = client
        .claim_tasks(with_key(
            &key,
            pb::ClaimTasksRequest {
                agent_id: other.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        claim_for_other.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // The services themselves refuse a caller without their token.
    let mut direct = TaskServiceClient::new(
        tonic::transport::Endpoint::from_shared(swarm.stack.tasks_url())
            .unwrap()
            .connect_lazy(),
    );
    let list = direct.list_tasks(pb::ListTasksRequest::default()).await;
    assert_eq!(list.unwrap_err().code(), tonic::Code::Unauthenticated);
    swarm.stop().await;
}

/// Wraps `message` in a request that carries API key `key`.
fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// `FinishTask` ends a held attempt and claims the agent's next tasks in the same call: only
/// tasks the agent is able to do, none past what it asks for, nothing at all when it asks for
/// too many (and then the outcome is not stored either); a repeat gets the same answer, and a
/// key reaches only its own agent's attempts.
async fn finishing_a_task_claims_the_next_in_the_same_call(backend: Backend) {
    use swarm_proto::worker::v1::worker_service_client::WorkerServiceClient;

    let swarm = TestStack::start(backend).await;
    let agent = swarm.register_agent("finisher", &["echo"], 4).await;
    let other = swarm.register_agent("bystander", &["echo"], 4).await;
    let (status, issued) = swarm
        .post(
            "/api/keys",
            serde_json::json!({"name": "finisher", "role": "agent", "agent_id": agent}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for (title, needs) in [("first", "echo"), ("second", "echo"), ("third", "gpu")] {
        let body = serde_json::json!({"title": title, "required_capabilities": [needs]});
        let (status, task) = swarm.post("/api/tasks", body).await;
        assert_eq!(status, 201, "{task}");
        ids.push(task["id"].as_str().unwrap().to_owned());
        // Distinct creation times keep the claim order (oldest first) certain.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(swarm.base.clone())
        .unwrap()
        .connect_lazy();
    let mut worker = WorkerServiceClient::new(channel);
    let claim = pb::ClaimTasksRequest {
        max_tasks: 1,
        ..Default::default()
    };
    let first = worker.claim_tasks(with_key(&key, claim)).await.unwrap();
    let first = first.into_inner().tasks.remove(0);
    assert_eq!(first.id, ids[0]);
    let completion = |task: &pb::Task, agent_id: &str| {
        pb::finish_task_request::Outcome::Complete(pb::CompleteTaskRequest {
            id: task.id.clone(),
            lease: Some(pb::LeaseRef {
                agent_id: agent_id.to_owned(),
                lease_id: task.lease_id.clone(),
            }),
            result_json: r#"{"done":1}"#.into(),
        })
    };
    let finish = |outcome, claim_next| pb::FinishTaskRequest {
        outcome: Some(outcome),
        claim_next,
    };

    // Asking for more than a claim may hand out stores nothing.
    let too_many = worker
        .finish_task(with_key(&key, finish(completion(&first, ""), 101)))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    let (_, unchanged) = swarm.get(&format!("/api/tasks/{}", ids[0])).await;
    assert_eq!(unchanged["status"], "active");
    // Another agent's attempt is out of this key's reach.
    let not_ours = worker
        .finish_task(with_key(&key, finish(completion(&first, &other), 1)))
        .await
        .unwrap_err();
    assert_eq!(not_ours.code(), tonic::Code::PermissionDenied);
    let no_outcome = pb::FinishTaskRequest {
        outcome: None,
        claim_next: 1,
    };
    let no_outcome = worker.finish_task(with_key(&key, no_outcome)).await;
    assert_eq!(no_outcome.unwrap_err().code(), tonic::Code::InvalidArgument);

    // The completion stands and the next task the agent can do comes back under a lease; the
    // one that needs a GPU stays queued.
    let answer = worker
        .finish_task(with_key(&key, finish(completion(&first, ""), 5)))
        .await
        .unwrap()
        .into_inner();
    let done = answer.task.unwrap();
    assert_eq!(
        (done.status(), done.result_json.as_deref()),
        (pb::TaskStatus::Completed, Some(r#"{"done":1}"#))
    );
    let claimed: Vec<&str> = answer.claimed.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(claimed, [ids[1].as_str()]);
    let second = &answer.claimed[0];
    assert_eq!(second.status(), pb::TaskStatus::Active);
    assert_eq!(second.agent_id.as_deref(), Some(agent.as_str()));
    assert!(second.lease_id.is_some());

    // A repeat gets the same task back, and claims only what it asks for: nothing here.
    let repeat = worker
        .finish_task(with_key(&key, finish(completion(&first, ""), 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.task.unwrap().updated_at, done.updated_at);
    assert!(repeat.claimed.is_empty());

    // A failure ends the second attempt for good; nothing is left that the agent can do.
    let failure = pb::finish_task_request::Outcome::Fail(pb::FailTaskRequest {
        id: second.id.clone(),
        lease: Some(pb::LeaseRef {
            agent_id: String::new(),
            lease_id: second.lease_id.clone(),
        }),
        error: "no luck".into(),
        retryable: Some(false),
    });
    let answer = worker
        .finish_task(with_key(&key, finish(failure, 1)))
        .await
        .unwrap()
        .into_inner();
    let failed = answer.task.unwrap();
    assert_eq!(
        (failed.status(), failed.error.as_deref()),
        (pb::TaskStatus::Failed, Some("no luck"))
    );
    assert!(answer.claimed.is_empty());
    let (_, third) = swarm.get(&format!("/api/tasks/{}", ids[2])).await;
    assert_eq!(third["status"], "queued");
    swarm.stop().await;
}

swarm_kit::conformance!(
    workers_need_only_an_agent_key_and_the_gateway,
    finishing_a_task_claims_the_next_in_the_same_call,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_speak_mutual_tls_when_given_certificates() {
    let certificates = swarm_kit::testing::TestCertificates::new();
    let tls = ServiceTls {
        identity: Some((certificates.cert_pem.clone(), certificates.key_pem.clone())),
        authority: Some(certificates.ca_pem.clone()),
    };
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.service_credentials = config.service_credentials.clone().with_tls(tls.clone());
    })
    .await;
    let tasks_url = swarm.stack.tasks_url();
    assert!(tasks_url.starts_with("https://"), "{tasks_url}");

    // The gateway reaches every service over mutual TLS.
    let (status, created) = swarm
        .post("/api/tasks", serde_json::json!({"title": "sealed"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, health) = swarm.get("/health").await;
    assert_eq!(
        (status, &health["status"]),
        (200, &serde_json::json!("healthy"))
    );

    // A service with the certificate and the token reads it.
    let sealed = swarm_kit::grpc::lazy_channel(
        &tasks_url,
        Duration::from_secs(2),
        None,
        &ServiceCredentials::new(Some(swarm.service_token.clone())).with_tls(tls.clone()),
    )
    .unwrap();
    let task = TaskServiceClient::new(sealed)
        .get_task(pb::GetTaskRequest {
            id: created["id"].as_str().unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.title, "sealed");

    // Plain text, and TLS without a certificate the authority signed, are refused.
    let address = tasks_url.trim_start_matches("https://");
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let anonymous = tonic::transport::Endpoint::from_shared(tasks_url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    &certificates.ca_pem,
                ))
                .domain_name("127.0.0.1"),
        )
        .unwrap()
        .connect_lazy();
    for (who, channel) in [("plain text", plain), ("no client certificate", anonymous)] {
        let refused = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        assert!(refused.is_err(), "{who} was served");
    }
    swarm.stop().await;
}

/// A gateway of its own over `swarm`'s services, with keys off and the service token
/// `credentials`: its URL, what stops it, and its run.
async fn extra_gateway(
    swarm: &TestStack,
    keys: &swarm_kit::testing::TestDatabase,
    credentials: ServiceCredentials,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), swarm_kit::RunError>>,
) {
    let config = swarm_gateway::GatewayConfig {
        database: swarm_kit::db::DatabaseConfig::local(2).at(keys.url()),
        auth: false,
        tasks_url: swarm.stack.tasks_url(),
        agents_url: swarm.stack.agents_url(),
        cache_url: swarm.stack.cache_url(),
        service_credentials: credentials,
        ..swarm_gateway::GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(swarm_gateway::run(
        listener,
        config,
        stop.clone().cancelled_owned(),
    ));
    (url, stop, run)
}

/// A gateway whose service token the services do not share (a misconfiguration, or a rotation
/// under way) answers its callers `unavailable`, which clients and workers retry, rather than
/// `unauthenticated`, which would blame their own keys and stop every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_the_services_refuse_answers_unavailable_not_unauthenticated() {
    let swarm = TestStack::start(Backend::Sqlite).await;
    let keys = swarm_kit::testing::TestDatabase::new(Backend::Sqlite).await;
    let wrong = ServiceCredentials::new(Some("not-the-services-token".into()));
    let (url, stop, gateway) = extra_gateway(&swarm, &keys, wrong).await;
    let client = reqwest::Client::new();
    for path in ["/api/tasks", "/api/agents"] {
        let answer =
            swarm_e2e::send_with(&client, reqwest::Method::GET, format!("{url}{path}"), None).await;
        swarm_e2e::assert_error(&answer, 503, "unavailable");
    }
    // A worker joining through that gateway is told to try again, not that its key is bad.
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_lazy();
    let joined = swarm_proto::worker::v1::worker_service_client::WorkerServiceClient::new(channel)
        .join(agents_pb::RegisterAgentRequest {
            name: "refused".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(joined.unwrap_err().code(), tonic::Code::Unavailable);
    stop.cancel();
    gateway.await.unwrap().unwrap();
    swarm.stop().await;
}

/// A task watch open on a gateway's worker service ends when that gateway stops, though the
/// tasks service runs on: stopping does not wait out the drain (the request deadline and 5 s)
/// for a running task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_task_watch_does_not_hold_a_gateway_up() {
    use swarm_proto::worker::v1::worker_service_client::WorkerServiceClient;

    let swarm = TestStack::start(Backend::Sqlite).await;
    let keys = swarm_kit::testing::TestDatabase::new(Backend::Sqlite).await;
    let token = ServiceCredentials::new(Some(swarm.service_token.clone()));
    let (url, stop, gateway) = extra_gateway(&swarm, &keys, token).await;
    let (status, task) = swarm
        .post("/api/tasks", serde_json::json!({"title": "long"}))
        .await;
    assert_eq!(status, 201, "{task}");
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_lazy();
    let watch = pb::WatchTaskRequest {
        id: task["id"].as_str().unwrap().to_owned(),
    };
    let mut events = WorkerServiceClient::new(channel)
        .watch_task(watch)
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().expect("the task's state");
    assert_eq!(first.task.unwrap().status(), pb::TaskStatus::Queued);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .expect("the gateway stops without waiting for the watch")
        .unwrap()
        .unwrap();
    swarm.stop().await;
}

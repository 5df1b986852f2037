//! End to end over gRPC: an agent's claim / progress / complete round trip against the tasks
//! service directly, and the health and reflection services every gRPC process serves.

use std::time::Duration;

use swarm_e2e::TestStack;
use swarm_kit::testing::Backend;
use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use swarm_proto::tasks::v1 as pb;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

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
    let claimed = tasks
        .claim_tasks(pb::ClaimTasksRequest {
            agent_id: agent_id.into(),
            max_tasks: 1,
            wait_seconds: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
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
    let none = tasks
        .claim_tasks(pb::ClaimTasksRequest {
            agent_id: agent_id.into(),
            max_tasks: 1,
            wait_seconds: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.tasks.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(1));

    let stranger = tasks
        .claim_tasks(pb::ClaimTasksRequest {
            agent_id: "0190f5d2-0000-7000-8000-000000000009".into(),
            max_tasks: 1,
            wait_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::NotFound);
    swarm.stop().await;
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
        &swarm_kit::service_auth::ServiceToken::new(Some("not-the-token-at-all".into())),
    )
    .unwrap();
    let refused = AgentServiceClient::new(wrong)
        .list_agents(agents_pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("reflection lists services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["swarm.tasks.v1.TaskService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    swarm.stop().await;
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter([item])
}

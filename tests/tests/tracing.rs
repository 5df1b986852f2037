//! Traces across every hop, proven by a real OTLP receiver: a collector built on the
//! `opentelemetry-proto` trace service runs in the test over TLS (https, with a certificate of an
//! authority the test makes and configures), the whole stack exports to it, and a
//! claim made through the gateway with the caller's `traceparent` must arrive as one trace:
//! caller → gateway → tasks → agents and cache → Redis, each call a client span under its
//! caller's server span and the parent of the callee's, with the claim's database statements
//! under the tasks span; named and described as OpenTelemetry's conventions say (span kinds,
//! `rpc.*`, `http.*`, `db.*`, and a resource with the service's name, version and instance).
//! (Telemetry is process-wide, so this file is its own test binary.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use swarm_e2e::{TestStack, answer, spans_until};
use swarm_kit::telemetry::{Export, Protocol};
use swarm_kit::testing::{Backend, RedisServer, TestCertificates};

/// Keeps every span it receives, with the attributes of its resource (as text).
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = format!(
                "{:?}",
                resource_spans
                    .resource
                    .map(|resource| resource.attributes)
                    .unwrap_or_default()
            );
            for scope_spans in resource_spans.scope_spans {
                kept.extend(
                    scope_spans
                        .spans
                        .into_iter()
                        .map(|span| (resource.clone(), span)),
                );
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// OTLP's span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// The text of attribute `key` of `span`, if it has it.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?;
    Some(format!("{:?}", value.value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_spans_gateway_tasks_agents_and_cache() {
    // The collector speaks TLS only, with a certificate of an authority the test made.
    let certificates = TestCertificates::new();
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let identity =
        tonic::transport::Identity::from_pem(&certificates.cert_pem, &certificates.key_pem);
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream_listener(listener));
    tokio::spawn(server);
    let telemetry = swarm_kit::telemetry::init_with(
        "swarm-e2e",
        Some(Export {
            endpoint,
            protocol: Protocol::Grpc,
            certificate: Some(certificates.ca_file()),
        }),
    );

    let redis = RedisServer::start();
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.cache.redis_url = Some(redis.url());
        config.tasks.lease_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let agent = swarm.register_agent("traced", &[], 1).await;
    swarm
        .post("/api/tasks", json!({"title": "traced work"}))
        .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = swarm
        .http
        .post(swarm.url("/api/tasks/claim"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"agent_id": agent}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")),
        "the caller's trace goes on: {answered}"
    );
    assert!(
        !answered.contains(caller_span),
        "the answer names the gateway's own span"
    );

    let calls = [
        "swarm.tasks.v1.TaskService/ClaimTasks",
        "swarm.agents.v1.AgentService/GetAgent",
        "swarm.cache.v1.CacheService/Get",
    ];
    let wanted: Vec<(&str, i32)> = calls
        .iter()
        .flat_map(|call| [(*call, CLIENT), (*call, SERVER)])
        .chain([
            ("POST /api/tasks/claim", SERVER),
            ("db.query", CLIENT),
            ("GET", CLIENT),
        ])
        .collect();
    let spans = spans_until(
        &telemetry,
        &format!("a trace with every span of {wanted:?}"),
        || {
            let spans: Vec<(String, Span)> = collector
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, span)| hex(&span.trace_id) == trace_id)
                .cloned()
                .collect();
            wanted
                .iter()
                .all(|(name, kind)| {
                    spans
                        .iter()
                        .any(|(_, span)| span.name == *name && span.kind == *kind)
                })
                .then_some(spans)
        },
    )
    .await;
    let find = |name: &str, kind: i32| {
        spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| span.name == name && span.kind == kind)
            .unwrap()
    };
    let gateway = find("POST /api/tasks/claim", SERVER);
    assert_eq!(
        hex(&gateway.parent_span_id),
        caller_span,
        "the gateway continues the caller's span"
    );
    assert!(answered.contains(&hex(&gateway.span_id)));
    assert_eq!(
        attribute(gateway, "http.route").as_deref(),
        Some(r#"Some(StringValue("/api/tasks/claim"))"#)
    );
    let tasks_call = find(calls[0], CLIENT);
    assert_eq!(
        tasks_call.parent_span_id, gateway.span_id,
        "the gateway calls tasks in a client span of its request"
    );
    let tasks = find(calls[0], SERVER);
    assert_eq!(
        tasks.parent_span_id, tasks_call.span_id,
        "tasks serves the gateway's call"
    );
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "swarm.tasks.v1.TaskService"),
        ("rpc.method", "ClaimTasks"),
    ] {
        for span in [tasks_call, tasks] {
            assert_eq!(
                attribute(span, key),
                Some(format!("Some(StringValue({value:?}))")),
                "{key} of {}",
                span.name
            );
        }
    }
    assert_eq!(
        attribute(tasks_call, "server.address").as_deref(),
        Some(r#"Some(StringValue("127.0.0.1"))"#),
        "the client span names the replica it called"
    );
    assert!(attribute(tasks_call, "server.port").is_some());
    for downstream in &calls[1..] {
        let call = find(downstream, CLIENT);
        assert_eq!(
            call.parent_span_id, tasks.span_id,
            "{downstream} is called from the tasks span"
        );
        assert_eq!(find(downstream, SERVER).parent_span_id, call.span_id);
    }
    assert_eq!(
        find("GET", CLIENT).parent_span_id,
        find(calls[2], SERVER).span_id,
        "the redis call is a child of the cache call"
    );
    assert!(
        spans.iter().any(|(_, span)| span.name == "db.query"
            && span.parent_span_id == tasks.span_id
            && span
                .attributes
                .iter()
                .any(|attribute| attribute.key == "db.query.text"
                    && attribute
                        .value
                        .as_ref()
                        .is_some_and(|value| format!("{value:?}").contains("tasks")))),
        "the claim's statements are child spans of the tasks span"
    );
    for key in ["service.name", "service.version", "service.instance.id"] {
        assert!(
            spans.iter().all(|(resource, _)| resource.contains(key)),
            "spans carry {key}"
        );
    }
    assert!(
        spans
            .iter()
            .all(|(resource, _)| resource.contains("swarm-e2e")),
        "service.name is the process's"
    );
    assert!(
        !collector
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, span)| span.name.contains("grpc.health")),
        "health checks are not traced"
    );

    // A lease that expires is background work on the task: its span links to the trace that
    // created the task.
    let creating_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, created) = answer(
        swarm
            .http
            .post(swarm.url("/api/tasks"))
            .header(
                "traceparent",
                format!("00-{creating_trace}-b7ad6b7169203331-01"),
            )
            .json(&json!({"title": "abandoned", "timeout_seconds": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let holder = swarm.register_agent("forgetful", &[], 1).await;
    let (status, claimed) = swarm
        .post("/api/tasks/claim", json!({"agent_id": holder}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(claimed["tasks"][0]["id"], created["id"]);
    // Whether a span that `is_the_one` by name links to the creating trace.
    let linked = |is_the_one: fn(&str) -> bool| {
        collector
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, span)| {
                is_the_one(&span.name)
                    && span
                        .links
                        .iter()
                        .any(|link| hex(&link.trace_id) == creating_trace)
            })
            .then_some(())
    };
    spans_until(
        &telemetry,
        "a lease-expiry span linked to the creating trace",
        || linked(|name| name == "task.lease_expired"),
    )
    .await;

    // A task that depends on another links to the trace that created its parent.
    let (status, _) = swarm
        .post(
            "/api/tasks",
            json!({"title": "follow-up", "depends_on": [created["id"]]}),
        )
        .await;
    assert_eq!(status, 201);
    spans_until(
        &telemetry,
        "a dependent's creation span linked to its parent's trace",
        || linked(|name| name != "task.lease_expired"),
    )
    .await;
    swarm.stop().await;
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

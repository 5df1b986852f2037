//! Span export over OTLP http/protobuf: a receiver in the test takes `POST /v1/traces` with a
//! protobuf `ExportTraceServiceRequest`, as an OpenTelemetry Collector does, and the spans of a
//! request through the gateway arrive there. (Telemetry is process-wide, so this file is its
//! own test binary.)

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::json;
use swarm_e2e::{TestStack, spans_until};
use swarm_kit::telemetry::{Export, Protocol};
use swarm_kit::testing::Backend;

/// The names of the spans received.
type Received = Arc<Mutex<Vec<String>>>;

async fn receive(
    State(received): State<Received>,
    body: Bytes,
) -> ([(header::HeaderName, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("a protobuf export request");
    received.lock().unwrap().extend(
        request
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .map(|span| span.name),
    );
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_arrive_over_http_protobuf() {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let telemetry = swarm_kit::telemetry::init_with(
        "swarm-e2e",
        Some(Export {
            endpoint,
            protocol: Protocol::HttpProtobuf,
            certificate: None,
        }),
    );

    let swarm = TestStack::start(Backend::Sqlite).await;
    let (status, _) = swarm.post("/api/tasks", json!({"title": "exported"})).await;
    assert_eq!(status, 201);

    spans_until(
        &telemetry,
        "the gateway's and the tasks service's spans",
        || {
            let names = received.lock().unwrap();
            (names.iter().any(|name| name == "POST /api/tasks")
                && names
                    .iter()
                    .any(|name| name == "swarm.tasks.v1.TaskService/CreateTask"))
            .then_some(())
        },
    )
    .await;
    swarm.stop().await;
}

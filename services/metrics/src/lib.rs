//! The Swarm metrics service: every process reports its metrics here
//! (`swarm.metrics.v1.MetricsService`); it aggregates them across processes and replicas over a
//! sliding window, holds them to the platform's targets, and serves a summary with alerts and
//! the Prometheus text exposition, over gRPC and, for scrapers, as plain HTTP `GET /metrics` on
//! the same port.
//!
//! [`run`] is the whole service. It keeps no state on disk: after a restart the window fills
//! again from the next reports.

pub mod config;
pub mod domain;
pub mod grpc;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::IntoResponse;
use swarm_kit::RunError;
use swarm_kit::host::ServiceHost;
use swarm_proto::metrics::v1::metrics_service_server::MetricsServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::info;

pub use config::MetricsConfig;

use crate::domain::{Aggregator, AlertBook, Figures, Targets, exposition};
use crate::grpc::MetricsGrpc;

/// Runs the metrics service on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: MetricsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let mut host = ServiceHost::new("metrics", &config.reporter, &config.service_credentials)?;
    let aggregator = Arc::new(Aggregator::new(config.window));
    let alerts = Arc::new(AlertBook::default());
    host.spawn(evaluate(
        Arc::clone(&aggregator),
        Arc::clone(&alerts),
        config.targets.clone(),
        host.stopping(),
    ));
    host.serving::<MetricsServiceServer<MetricsGrpc>>(None)
        .await;
    let grpc = MetricsServiceServer::new(MetricsGrpc::new(Arc::clone(&aggregator), alerts));
    let router = host.routes().add_service(grpc).into_axum_router().route(
        "/metrics",
        axum::routing::get(prometheus).with_state(Arc::clone(&aggregator)),
    );
    info!(
        window_seconds = config.window.as_secs(),
        "metrics window set"
    );
    host.serve(listener, Routes::from(router), shutdown).await
}

/// Answers a scrape with the Prometheus text exposition.
async fn prometheus(State(aggregator): State<Arc<Aggregator>>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        exposition::render(&aggregator.snapshot().instances),
    )
}

/// Holds the window's figures to `targets` as the window moves, until `stop`.
async fn evaluate(
    aggregator: Arc<Aggregator>,
    alerts: Arc<AlertBook>,
    targets: Targets,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(aggregator.slot());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let figures = Figures::of(&aggregator.snapshot());
        alerts.update(targets.breaches(&figures), SystemTime::now());
    }
}

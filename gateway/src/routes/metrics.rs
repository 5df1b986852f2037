//! Metrics routes, read from the metrics service: `GET /api/metrics`, the JSON summary across
//! every service with its alerts (the metrics service's own message, served as it comes), and
//! `GET /metrics`, the Prometheus text exposition.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use swarm_kit::ErrorCode;
use swarm_kit::grpc::ServiceChannel;
use swarm_proto::metrics::v1 as pb;
use swarm_proto::metrics::v1::metrics_service_client::MetricsServiceClient;

use crate::error::ApiError;
use crate::state::AppState;

/// The content type of the Prometheus text exposition.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn client(state: &AppState) -> Result<MetricsServiceClient<ServiceChannel>, ApiError> {
    state.metrics.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "no metrics service is configured (set SWARM_METRICS_URL)",
        )
    })
}

/// `GET /api/metrics`: requests, database, cache, tasks, memory and alerts.
#[utoipa::path(get, operation_id = "getMetrics", path = "/api/metrics", tag = "metrics",
    responses((status = 200, description = "Requests, database, cache, tasks, memory and alerts across every service.", body = pb::Summary)))]
pub async fn summary(State(state): State<AppState>) -> Result<axum::Json<pb::Summary>, ApiError> {
    let summary = client(&state)?
        .get_summary(state.ask(pb::GetSummaryRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(summary))
}

/// `GET /metrics`: Prometheus text exposition of every process's metrics.
#[utoipa::path(get, operation_id = "getPrometheusMetrics", path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String)))]
pub async fn prometheus(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = client(&state)?
        .get_prometheus(state.ask(pb::GetPrometheusRequest {}))
        .await?
        .into_inner()
        .text;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}

//! Metrics routes, read from the metrics service: `GET /api/metrics`, the JSON summary across
//! every service with its alerts, and `GET /metrics`, the Prometheus text exposition.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use swarm_kit::ErrorCode;
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::time::rfc3339;
use swarm_proto::metrics::v1 as pb;
use swarm_proto::metrics::v1::metrics_service_client::MetricsServiceClient;

use crate::error::ApiError;
use crate::model::round2;
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
#[utoipa::path(get, path = "/api/metrics", tag = "metrics",
    responses((status = 200, description = "Requests, database, cache, tasks, memory and alerts across every service.", body = serde_json::Value)))]
pub async fn summary(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let summary = client(&state)?
        .get_summary(state.call(pb::GetSummaryRequest {}, Duration::ZERO))
        .await?
        .into_inner();
    Ok(axum::Json(summary_json(&summary)))
}

/// `GET /metrics`: Prometheus text exposition of every process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String)))]
pub async fn prometheus(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = client(&state)?
        .get_prometheus(state.call(pb::GetPrometheusRequest {}, Duration::ZERO))
        .await?
        .into_inner()
        .text;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}

fn summary_json(summary: &pb::Summary) -> Value {
    let requests = summary.requests.clone().unwrap_or_default();
    let database = summary.database.unwrap_or_default();
    let cache = summary.cache.unwrap_or_default();
    json!({
        "window_seconds": summary.window_seconds,
        "requests": {
            "total": requests.total,
            "errors": requests.errors,
            "error_rate": requests.error_rate,
            "latency_ms": latency(requests.latency_ms.as_ref()),
            "routes": requests.routes.iter().map(|route| json!({
                "service": route.service,
                "route": route.route,
                "total": route.total,
                "errors": route.errors,
                "latency_ms": latency(route.latency_ms.as_ref()),
            })).collect::<Vec<_>>(),
        },
        "database": {
            "pool_size": database.pool_size,
            "checked_out": database.checked_out,
            "idle": database.idle,
            "slow_queries": database.slow_queries,
            "query_latency_ms": latency(database.query_latency_ms.as_ref()),
        },
        "cache": {
            "hits": cache.hits,
            "misses": cache.misses,
            "hit_rate": cache.hit_rate,
            "entries": cache.entries,
            "evictions": cache.evictions,
        },
        "tasks": summary.tasks,
        "queue_wait_ms": latency(summary.queue_wait_ms.as_ref()),
        "memory": summary.memory_mb.iter().map(|(service, mb)| (service.clone(), json!({"rss_mb": round2(*mb)}))).collect::<serde_json::Map<_, _>>(),
        "cpu_percent": summary.cpu_percent.iter().map(|(service, percent)| (service.clone(), json!(round2(*percent)))).collect::<serde_json::Map<_, _>>(),
        "alerts": summary.alerts.iter().map(|alert| json!({
            "name": alert.name,
            "value": alert.value,
            "target": alert.target,
            "since": alert.since.as_ref().map(rfc3339),
            "message": alert.message,
        })).collect::<Vec<_>>(),
        "reporters": summary.reporters.iter().map(|reporter| json!({
            "service": reporter.service,
            "instance": reporter.instance,
            "last_seen": reporter.last_seen.as_ref().map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

fn latency(latency: Option<&pb::Latency>) -> Value {
    let latency = latency.copied().unwrap_or_default();
    json!({"p50": round2(latency.p50), "p95": round2(latency.p95), "p99": round2(latency.p99)})
}

//! Metrics routes, read from the metrics service: `GET /api/metrics`, the JSON summary across
//! every service with its alerts, and `GET /metrics`, the Prometheus text exposition.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use swarm_kit::ErrorCode;
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::time::rfc3339;
use swarm_proto::metrics::v1 as pb;
use swarm_proto::metrics::v1::metrics_service_client::MetricsServiceClient;
use utoipa::ToSchema;

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
#[utoipa::path(get, operation_id = "getMetrics", path = "/api/metrics", tag = "metrics",
    responses((status = 200, description = "Requests, database, cache, tasks, memory and alerts across every service.", body = MetricsSummary)))]
pub async fn summary(
    State(state): State<AppState>,
) -> Result<axum::Json<MetricsSummary>, ApiError> {
    let summary = client(&state)?
        .get_summary(state.call(pb::GetSummaryRequest {}, Duration::ZERO))
        .await?
        .into_inner();
    Ok(axum::Json(summary.into()))
}

/// `GET /metrics`: Prometheus text exposition of every process's metrics.
#[utoipa::path(get, operation_id = "getPrometheusMetrics", path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String)))]
pub async fn prometheus(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = client(&state)?
        .get_prometheus(state.call(pb::GetPrometheusRequest {}, Duration::ZERO))
        .await?
        .into_inner()
        .text;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}

/// The metrics summary across every service.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsSummary {
    /// The sliding window that counts and latencies cover, in seconds.
    window_seconds: u32,
    /// Requests of every service within the window.
    requests: RequestsView,
    /// Pools now; statements within the window.
    database: DatabaseView,
    /// Lookups within the window; entries now.
    cache: CacheView,
    /// Tasks per status.
    tasks: BTreeMap<String, u64>,
    /// How long tasks claimed within the window had waited.
    queue_wait_ms: LatencyView,
    /// Resident memory per service.
    memory: BTreeMap<String, MemoryView>,
    /// CPU use over the window per service, in percent of one core.
    cpu_percent: BTreeMap<String, f64>,
    /// Targets breached now.
    alerts: Vec<AlertView>,
    /// The processes reporting.
    reporters: Vec<ReporterView>,
}

/// Request counts and latency.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestsView {
    /// Requests answered.
    total: u64,
    /// Requests that failed on the server's side.
    errors: u64,
    /// errors / total.
    error_rate: f64,
    /// Latency percentiles.
    latency_ms: LatencyView,
    /// Per service and route, busiest first.
    routes: Vec<RouteView>,
}

/// One route's requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteView {
    /// The service that served it.
    service: String,
    /// The route template or gRPC method.
    route: String,
    /// Requests answered.
    total: u64,
    /// Requests that failed on the server's side.
    errors: u64,
    /// Latency percentiles.
    latency_ms: LatencyView,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyView {
    /// The median.
    p50: f64,
    /// The 95th percentile.
    p95: f64,
    /// The 99th percentile.
    p99: f64,
}

/// Database figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseView {
    /// Connections open.
    pool_size: u64,
    /// Connections in use.
    checked_out: u64,
    /// Connections idle.
    idle: u64,
    /// Statements slower than the threshold.
    slow_queries: u64,
    /// Statement latency.
    query_latency_ms: LatencyView,
}

/// Cache figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheView {
    /// Lookups that found their key.
    hits: u64,
    /// Lookups that did not.
    misses: u64,
    /// hits / (hits + misses).
    hit_rate: f64,
    /// Entries held.
    entries: u64,
    /// Entries evicted.
    evictions: u64,
}

/// Memory of one service.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    /// Resident memory of its largest process.
    rss_mb: f64,
}

/// A breached target.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    /// The target, such as `api_p95_ms`.
    name: String,
    /// The measured figure.
    value: f64,
    /// The target it breaches.
    target: f64,
    /// When the breach began.
    since: Option<String>,
    /// A sentence for humans.
    message: String,
}

/// A reporting process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReporterView {
    /// Its service.
    service: String,
    /// Its instance id.
    instance: String,
    /// When its last report arrived.
    last_seen: Option<String>,
}

impl From<pb::Summary> for MetricsSummary {
    fn from(summary: pb::Summary) -> Self {
        let requests = summary.requests.unwrap_or_default();
        let database = summary.database.unwrap_or_default();
        let cache = summary.cache.unwrap_or_default();
        Self {
            window_seconds: summary.window_seconds,
            requests: RequestsView {
                total: requests.total,
                errors: requests.errors,
                error_rate: requests.error_rate,
                latency_ms: latency(requests.latency_ms),
                routes: requests
                    .routes
                    .into_iter()
                    .map(|route| RouteView {
                        service: route.service,
                        route: route.route,
                        total: route.total,
                        errors: route.errors,
                        latency_ms: latency(route.latency_ms),
                    })
                    .collect(),
            },
            database: DatabaseView {
                pool_size: database.pool_size,
                checked_out: database.checked_out,
                idle: database.idle,
                slow_queries: database.slow_queries,
                query_latency_ms: latency(database.query_latency_ms),
            },
            cache: CacheView {
                hits: cache.hits,
                misses: cache.misses,
                hit_rate: cache.hit_rate,
                entries: cache.entries,
                evictions: cache.evictions,
            },
            tasks: summary.tasks.into_iter().collect(),
            queue_wait_ms: latency(summary.queue_wait_ms),
            memory: summary
                .memory_mb
                .into_iter()
                .map(|(service, mb)| (service, MemoryView { rss_mb: round2(mb) }))
                .collect(),
            cpu_percent: summary
                .cpu_percent
                .into_iter()
                .map(|(service, percent)| (service, round2(percent)))
                .collect(),
            alerts: summary
                .alerts
                .into_iter()
                .map(|alert| AlertView {
                    since: alert.since.as_ref().map(rfc3339),
                    name: alert.name,
                    value: alert.value,
                    target: alert.target,
                    message: alert.message,
                })
                .collect(),
            reporters: summary
                .reporters
                .into_iter()
                .map(|reporter| ReporterView {
                    last_seen: reporter.last_seen.as_ref().map(rfc3339),
                    service: reporter.service,
                    instance: reporter.instance,
                })
                .collect(),
        }
    }
}

fn latency(latency: Option<pb::Latency>) -> LatencyView {
    let latency = latency.unwrap_or_default();
    LatencyView {
        p50: round2(latency.p50),
        p95: round2(latency.p95),
        p99: round2(latency.p99),
    }
}

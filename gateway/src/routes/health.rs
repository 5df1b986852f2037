//! Health routes: `/health` asks every configured service's gRPC health and answers 200 while
//! all serve, 503 otherwise; `/api/health` adds the gateway process's memory and CPU. For
//! probes of one gateway pod: `/livez` (the process answers) and `/readyz` (this gateway can
//! serve: it is not draining and its own database answers), neither of which asks the services.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use swarm_kit::metrics::round2;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;

use crate::state::{AppState, Upstream};

/// How long a service may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the health routes answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `healthy`, `degraded` (Redis down, memory answering) or `unhealthy`.
    status: &'static str,
    /// When the report was made.
    timestamp: String,
    /// `connected` or `disconnected`.
    database: &'static str,
    /// `redis`, `memory` or `disconnected`.
    cache: &'static str,
    /// Each service: `serving`, `not_serving` or `unreachable`.
    services: BTreeMap<&'static str, &'static str>,
    /// How long the checks took.
    response_time_ms: f64,
    /// The gateway process's figures (`/api/health` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<ProcessFigures>,
}

/// Memory and CPU of the gateway process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessFigures {
    /// Resident memory.
    memory_mb: f64,
    /// Resident memory in percent of the machine's.
    memory_percent: f64,
    /// CPU use since the previous reading, in percent of one core.
    cpu_percent: f64,
}

/// `GET /health`.
#[utoipa::path(get, operation_id = "health", path = "/health", tag = "health",
    responses((status = 200, description = "Every service answers (or the cache is degraded).", body = HealthReport),
        (status = 503, description = "A service does not answer.", body = HealthReport)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, axum::Json<HealthReport>) {
    let (status, body) = report(&state).await;
    (status, axum::Json(body))
}

/// `GET /api/health`: the same report plus process figures.
#[utoipa::path(get, operation_id = "apiHealth", path = "/api/health", tag = "health",
    responses((status = 200, description = "Every service answers, with the gateway's memory and CPU.", body = HealthReport),
        (status = 503, description = "A service does not answer.", body = HealthReport)))]
pub async fn api_health(State(state): State<AppState>) -> (StatusCode, axum::Json<HealthReport>) {
    let (status, mut body) = report(&state).await;
    let rss = swarm_kit::process::resident_bytes().unwrap_or(0) as f64;
    let total = swarm_kit::process::total_memory_bytes().unwrap_or(0) as f64;
    body.metrics = Some(ProcessFigures {
        memory_mb: round2(rss / (1024.0 * 1024.0)),
        memory_percent: if total > 0.0 {
            round2(rss / total * 100.0)
        } else {
            0.0
        },
        cpu_percent: round2(state.cpu.percent()),
    });
    (status, axum::Json(body))
}

/// What the probe routes answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `alive`; `ready`, `draining` or `database_unreachable`.
    status: &'static str,
}

/// `GET /livez`: for a liveness probe, which must follow nothing but the process itself.
#[utoipa::path(get, operation_id = "live", path = "/livez", tag = "health",
    responses((status = 200, description = "The gateway process answers.", body = Probe)))]
pub async fn live() -> axum::Json<Probe> {
    axum::Json(Probe { status: "alive" })
}

/// `GET /readyz`: for a readiness probe: whether this gateway can serve, from what is its own
/// (whether it is draining, whether its database answers), never from the shared services,
/// so that one service restarting does not take every gateway out of rotation.
#[utoipa::path(get, operation_id = "ready", path = "/readyz", tag = "health",
    responses((status = 200, description = "This gateway serves.", body = Probe),
        (status = 503, description = "It is draining, or its database does not answer.", body = Probe)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, axum::Json<Probe>) {
    let status = if state.shutdown.is_cancelled() {
        "draining"
    } else if matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.database.ping()).await,
        Ok(Ok(()))
    ) {
        "ready"
    } else {
        "database_unreachable"
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(Probe { status }))
}

async fn report(state: &AppState) -> (StatusCode, HealthReport) {
    let started = Instant::now();
    let checks = futures_util::future::join_all(state.upstreams.iter().map(check)).await;
    let services: BTreeMap<&str, &str> = state
        .upstreams
        .iter()
        .map(|upstream| upstream.name)
        .zip(checks.iter().copied())
        .collect();
    let all_serving = checks.iter().all(|status| *status == "serving");
    let tasks_serving = services.get("tasks") == Some(&"serving");
    let cache = cache_tier(state).await;
    let (code, status) = match (all_serving, cache) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (true, CacheTier::Degraded) => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::OK, "healthy"),
    };
    let body = HealthReport {
        status,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        database: if tasks_serving {
            "connected"
        } else {
            "disconnected"
        },
        cache: cache.name(),
        services,
        response_time_ms: round2(started.elapsed().as_secs_f64() * 1000.0),
        metrics: None,
    };
    (code, body)
}

/// Which tier the cache service answers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheTier {
    Redis,
    Memory,
    /// Redis is configured but down; memory answers.
    Degraded,
    Disconnected,
}

impl CacheTier {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Memory | Self::Degraded => "memory",
            Self::Disconnected => "disconnected",
        }
    }
}

/// Asks the cache service which tier answers (which it knows without calling Redis).
async fn cache_tier(state: &AppState) -> CacheTier {
    let mut request = tonic::Request::new(swarm_proto::cache::v1::TierRequest {});
    request.set_timeout(CHECK_TIMEOUT);
    match tokio::time::timeout(CHECK_TIMEOUT, state.cache.clone().tier(request)).await {
        Ok(Ok(tier)) if tier.get_ref().degraded => CacheTier::Degraded,
        Ok(Ok(tier)) if tier.get_ref().backend == "redis" => CacheTier::Redis,
        Ok(Ok(_)) => CacheTier::Memory,
        Ok(Err(_)) | Err(_) => CacheTier::Disconnected,
    }
}

/// Asks one service's overall health: `serving`, `not_serving` or `unreachable`.
async fn check(upstream: &Upstream) -> &'static str {
    let mut client = HealthClient::new(upstream.channel.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(CHECK_TIMEOUT);
    match tokio::time::timeout(CHECK_TIMEOUT, client.check(request)).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => "serving",
        Ok(Ok(_)) => "not_serving",
        Ok(Err(_)) | Err(_) => "unreachable",
    }
}

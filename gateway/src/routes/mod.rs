//! The REST routes of API.md, assembled into one router with the gateway's middleware: body
//! limit, a deadline per request, request ids, panic safety, the error envelope for unknown
//! routes, `?fields=` projection, gzip, brotli or zstd for answers of 1 KiB or more, `ETag` /
//! `If-None-Match` on GETs, CORS for configured origins, request metrics, and a trace span per
//! request that continues the caller's `traceparent`.

pub(crate) mod agents;
pub(crate) mod cache;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod messages;
pub(crate) mod metrics;
pub(crate) mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Extensions, Method, Uri};
use axum::routing::{get, post};
use swarm_kit::metrics::{Registry, RequestMetricsLayer};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::{not_found, panic_response};
use crate::state::AppState;
use crate::{auth, conditional, fields, limits, traced};

/// Builds the gateway's router over `state`; with a `metrics` registry, every request is
/// measured into it.
pub fn router(state: AppState, metrics: Option<Arc<Registry>>) -> Router {
    let body_limit = state.config.body_limit;
    let cors = limits::cors(&state.config.cors_origins);
    let etags = state
        .config
        .etags
        .then(|| axum::middleware::from_fn(conditional::etag));
    let measure = metrics.map(|registry| RequestMetricsLayer::new(registry, http_route));
    let worker_state = state.clone();
    let rest = Router::new()
        .route("/health", get(health::health))
        .route("/api/health", get(health::api_health))
        .route("/api/tasks", post(tasks::create).get(tasks::list))
        .route("/api/tasks/claim", post(tasks::claim))
        .route("/api/tasks/{id}", get(tasks::get))
        .route("/api/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/tasks/{id}/events", get(tasks::events))
        .route("/api/tasks/{id}/progress", post(tasks::progress))
        .route("/api/tasks/{id}/complete", post(tasks::complete))
        .route("/api/tasks/{id}/fail", post(tasks::fail))
        .route(
            "/api/tasks/{id}/messages",
            post(messages::add).get(messages::list_for_task),
        )
        .route("/api/messages", get(messages::list_recent))
        .route("/api/process", post(tasks::process))
        .route("/api/agents", post(agents::register).get(agents::list))
        .route("/api/agents/list", get(agents::list_alias))
        .route(
            "/api/agents/{id}",
            get(agents::get)
                .patch(agents::update)
                .delete(agents::delete),
        )
        .route("/api/agents/{id}/heartbeat", post(agents::heartbeat))
        .route("/api/agents/{id}/config", get(agents::config))
        .route("/api/cache/stats", get(cache::stats))
        .route("/api/metrics", get(metrics::summary))
        .route("/api/keys", post(keys::create).get(keys::list))
        .route("/api/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/metrics", get(metrics::prometheus))
        .route(
            "/api/cache/{key}",
            get(cache::get).put(cache::put).delete(cache::delete),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url("/api/openapi.json", crate::openapi::document()),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::deadline,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(traced::trace))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(fields::project))
        .layer(
            CompressionLayer::new()
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024))),
        )
        .layer(tower::util::option_layer(etags))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(tower::util::option_layer(cors))
        .layer(tower::util::option_layer(measure));
    // Workers' gRPC calls come in beside REST, past none of its layers.
    crate::worker_grpc::serve_beside(rest, worker_state)
}

/// Names a request for metrics by its method and route template; health checks are left out.
fn http_route(method: &Method, _: &Uri, extensions: &Extensions) -> Option<String> {
    let route = traced::traffic_route(extensions)?;
    Some(if route == traced::UNMATCHED {
        route.to_owned()
    } else {
        format!("{method} {route}")
    })
}

//! The REST routes, declared once each in [`table`], assembled into one router with the
//! gateway's middleware: the role check, body
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
pub(crate) mod schedules;
pub(crate) mod tasks;
pub(crate) mod work;
pub(crate) mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Extensions, Method, Uri};
use swarm_kit::metrics::{Registry, RequestMetricsLayer};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::auth::Role;
use crate::error::{method_not_allowed, not_found, panic_response};
use crate::rules::{Access, RouteRules, RuleBook};
use crate::state::AppState;
use crate::{auth, conditional, fields, limits, openapi, rules, traced};

/// Keys that may call a route besides admin keys, which may call them all.
const ADMINS: Access = Access::Keys(&[]);
const CLIENTS: Access = Access::Keys(&[Role::Client]);
const AGENTS: Access = Access::Keys(&[Role::Agent]);
const CLIENTS_AND_AGENTS: Access = Access::Keys(&[Role::Client, Role::Agent]);

/// One REST route: its handler, whose `#[utoipa::path]` gives the method, the path and the
/// OpenAPI description, and the rules that apply to it.
struct Route {
    handler: UtoipaMethodRouter<AppState>,
    rules: RouteRules,
}

impl Route {
    fn new(handler: UtoipaMethodRouter<AppState>, access: Access) -> Self {
        Self {
            handler,
            rules: RouteRules::new(access),
        }
    }

    /// Neither traced nor measured.
    fn quiet(mut self) -> Self {
        self.rules.quiet = true;
        self
    }

    /// A long poll, whose deadline stretches by the longest wait.
    fn long_poll(mut self) -> Self {
        self.rules.long_poll = true;
        self
    }
}

/// Every REST route. Adding one is a line here and its handler: the router, the OpenAPI
/// document, the role check, tracing, metrics and the deadline all follow from this table.
fn table() -> Vec<Route> {
    vec![
        Route::new(routes!(health::health), Access::Open).quiet(),
        Route::new(routes!(health::api_health), Access::Open).quiet(),
        Route::new(routes!(health::live), Access::Open).quiet(),
        Route::new(routes!(health::ready), Access::Open).quiet(),
        Route::new(routes!(metrics::prometheus), Access::Open),
        Route::new(routes!(tasks::create), CLIENTS),
        Route::new(routes!(tasks::create_batch), CLIENTS),
        Route::new(routes!(tasks::list), CLIENTS),
        Route::new(routes!(tasks::get), CLIENTS),
        Route::new(routes!(tasks::cancel), CLIENTS),
        Route::new(routes!(tasks::retry), CLIENTS),
        Route::new(routes!(workflows::create, workflows::list), CLIENTS),
        Route::new(routes!(workflows::get), CLIENTS),
        Route::new(routes!(workflows::cancel), CLIENTS),
        Route::new(routes!(schedules::create, schedules::list), CLIENTS),
        Route::new(
            routes!(schedules::get, schedules::update, schedules::delete),
            CLIENTS,
        ),
        Route::new(routes!(schedules::pause), CLIENTS),
        Route::new(routes!(schedules::resume), CLIENTS),
        Route::new(routes!(tasks::attempts), CLIENTS),
        Route::new(routes!(tasks::events), CLIENTS_AND_AGENTS),
        Route::new(routes!(tasks::process), CLIENTS),
        Route::new(routes!(work::claim), AGENTS).long_poll(),
        Route::new(routes!(work::progress), AGENTS),
        Route::new(routes!(work::complete), AGENTS),
        Route::new(routes!(work::fail), AGENTS),
        Route::new(routes!(work::finish), AGENTS),
        Route::new(routes!(messages::add), CLIENTS_AND_AGENTS),
        Route::new(routes!(messages::list_for_task), CLIENTS_AND_AGENTS),
        Route::new(routes!(messages::list_recent), CLIENTS),
        Route::new(routes!(agents::register), ADMINS),
        Route::new(routes!(agents::join), AGENTS),
        Route::new(routes!(agents::list), ADMINS),
        Route::new(routes!(agents::list_alias), ADMINS),
        Route::new(routes!(agents::get), AGENTS),
        Route::new(routes!(agents::update), ADMINS),
        Route::new(routes!(agents::delete), ADMINS),
        Route::new(routes!(agents::heartbeat), AGENTS),
        Route::new(routes!(agents::config), AGENTS),
        Route::new(routes!(cache::stats), ADMINS),
        Route::new(routes!(cache::get), CLIENTS),
        Route::new(routes!(cache::put), CLIENTS),
        Route::new(routes!(cache::delete), CLIENTS),
        Route::new(routes!(metrics::summary), ADMINS),
        Route::new(routes!(keys::current), CLIENTS_AND_AGENTS),
        Route::new(routes!(keys::create), ADMINS),
        Route::new(routes!(keys::list), ADMINS),
        Route::new(routes!(keys::revoke), ADMINS),
    ]
}

/// The REST API as the table declares it: the routes, their OpenAPI description (with the
/// conventions every route shares) and the rules of each.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi, RuleBook) {
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi());
    let mut book = RuleBook::default();
    for route in table() {
        for (path, item) in &route.handler.1.paths {
            for method in methods(item) {
                book.insert(method, path, route.rules);
            }
        }
        router = router.routes(route.handler);
    }
    let (router, mut document) = router.split_for_parts();
    openapi::apply_conventions(&mut document, &book);
    (router, document, book)
}

/// The methods a path item describes.
fn methods(item: &utoipa::openapi::path::PathItem) -> Vec<Method> {
    [
        (&item.get, Method::GET),
        (&item.post, Method::POST),
        (&item.put, Method::PUT),
        (&item.patch, Method::PATCH),
        (&item.delete, Method::DELETE),
    ]
    .into_iter()
    .filter(|(operation, _)| operation.is_some())
    .map(|(_, method)| method)
    .collect()
}

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
    let (api, document, book) = api();
    let book = Arc::new(book);
    let tools = crate::mcp::Tools::new(&document, Arc::clone(&book));
    let rest = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.auth.clone()),
            auth::authenticate,
        ))
        // The documentation and the dashboard are open, and outside the role check.
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/api/openapi.json", document))
        .merge(crate::ui::router(state.config.auth))
        .layer(axum::middleware::from_fn_with_state(
            state.config.request_timeout,
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
        .layer(tower::util::option_layer(measure))
        .layer(axum::middleware::from_fn_with_state(book, rules::attach));
    // MCP tools are REST calls sent through everything above.
    let rest = rest
        .clone()
        .merge(crate::mcp::router(rest, tools, &worker_state.shutdown));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_reach_their_routes_only() {
        let (_, _, book) = api();
        let admits = |role: Role, method: Method, path: &str| {
            book.get(&method, path)
                .unwrap_or_else(|| panic!("{method} {path} is declared"))
                .access
                .admits(role)
        };
        assert!(admits(Role::Admin, Method::POST, "/api/keys"));
        assert!(admits(Role::Client, Method::POST, "/api/tasks"));
        assert!(!admits(Role::Client, Method::POST, "/api/tasks/claim"));
        assert!(!admits(Role::Client, Method::POST, "/api/agents"));
        assert!(!admits(Role::Client, Method::GET, "/api/keys"));
        // The router answers HEAD with the GET handler: it passes the same check.
        assert!(!admits(Role::Client, Method::HEAD, "/api/keys"));
        assert!(admits(Role::Client, Method::HEAD, "/api/tasks"));
        assert!(admits(
            Role::Agent,
            Method::POST,
            "/api/tasks/{id}/complete"
        ));
        assert!(!admits(Role::Agent, Method::POST, "/api/tasks"));
        assert!(!admits(Role::Agent, Method::DELETE, "/api/agents/{id}"));
        assert!(admits(Role::Agent, Method::GET, "/api/tasks/{id}/events"));
        let claim = book.get(&Method::POST, "/api/tasks/claim").unwrap();
        assert!(claim.long_poll && !claim.quiet);
        assert!(book.get(&Method::GET, "/health").unwrap().quiet);
    }
}

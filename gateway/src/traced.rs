//! Request tracing: each API request runs in a span that continues the caller's `traceparent`
//! (or starts a trace), every gRPC call made while handling it carries that context, and the
//! answer returns the request's `traceparent`. Quiet routes (health checks) are not traced.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::rules::RouteRules;

/// What requests that match no route are named.
pub const UNMATCHED: &str = "unmatched";

/// Returns the route template a request matched ([`UNMATCHED`] when none did), or `None` for
/// quiet routes (health checks), which are neither traced nor measured.
pub fn traffic_route(extensions: &axum::http::Extensions) -> Option<&str> {
    if extensions
        .get::<RouteRules>()
        .is_some_and(|rules| rules.quiet)
    {
        return None;
    }
    Some(
        extensions
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str),
    )
}

/// Runs a request inside its span and answers with its `traceparent`.
pub async fn trace(request: Request, next: Next) -> Response {
    let Some(route) = traffic_route(request.extensions()).map(str::to_owned) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
    );
    swarm_kit::trace::continue_trace(&span, request.headers());
    let traceparent = swarm_kit::trace::traceparent(&span);
    let mut response = next.run(request).instrument(span).await;
    if let Some(value) = traceparent.and_then(|value| HeaderValue::from_str(&value).ok()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

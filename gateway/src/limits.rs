//! Request limits beyond the body size: a deadline on every request (504 with the envelope
//! when it passes; a claim may also wait as long as it asked to), and CORS for browser
//! clients of the configured origins.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use swarm_kit::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::rules::RouteRules;

/// The longest a claim may long-poll, on top of the request deadline.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);

/// Answers 504 `deadline_exceeded` when a request takes longer than `timeout` (plus the
/// longest claim wait, for long polls) to produce its answer's head. Event streams are long by
/// nature: only their head is bounded.
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let long_poll = request
        .extensions()
        .get::<RouteRules>()
        .is_some_and(|rules| rules.long_poll);
    let limit = timeout
        + if long_poll {
            MAX_CLAIM_WAIT
        } else {
            Duration::ZERO
        };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::DeadlineExceeded,
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Builds the CORS layer for `origins` (`*` allows any); `None` when no origin is allowed.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let request_id = HeaderName::from_static("x-request-id");
    let traceparent = HeaderName::from_static("traceparent");
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("idempotency-key"),
                request_id.clone(),
                traceparent.clone(),
            ])
            .expose_headers([header::ETAG, header::RETRY_AFTER, request_id, traceparent])
            .max_age(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_request_past_its_deadline_gets_504_with_the_envelope() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "on time" }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(20),
                deadline,
            ));
        let answer = |path: &'static str| {
            app.clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
        };
        let late = answer("/slow").await.unwrap();
        assert_eq!(late.status(), 504);
        let body = axum::body::to_bytes(late.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "deadline_exceeded");
        assert_eq!(answer("/fast").await.unwrap().status(), 200);
    }
}

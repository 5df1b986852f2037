//! Request extractors that fail with the API's error envelope: a JSON body (strict: unknown
//! fields and wrong types are 400, an oversized body is 413) and query parameters.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use swarm_kit::ErrorCode;

use crate::error::ApiError;

/// A JSON request body. A `Content-Type` other than JSON is refused; a missing one is accepted.
/// An empty body reads as `null`: `Json<Option<T>>` takes a body that may be left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = json_body(request, state).await?;
        parse(&body).map(Json)
    }
}

/// Reads a request body, refusing a `Content-Type` other than JSON (a missing one is accepted).
async fn json_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
        let is_json = content_type
            .to_str()
            .ok()
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::invalid("content type must be application/json"));
        }
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            } else {
                ApiError::invalid(format!("cannot read request body: {rejection}"))
            }
        })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"null")
            .map_err(|_| ApiError::invalid("a json request body is required"));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid(format!("invalid json body: {error}")))
}

/// Query parameters.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(format!("invalid query: {}", rejection.body_text()))
    }
}

//! REST errors: every failure leaves as the API's envelope
//! `{"error": {"code", "message"}}` with the matching HTTP status, whether it came from a
//! service over gRPC, from a malformed request, or from a panic.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use swarm_kit::{Error, ErrorCode};

/// An error on its way to a REST client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub Error);

impl ApiError {
    /// Builds an `invalid_argument` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(Error::invalid(message))
    }

    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Error::new(code, message))
    }

    /// Names the part of the request an invalid input is about: `tasks[3]` turns "title must
    /// be .." into "tasks[3].title must be ..". Other errors stay as they are.
    #[must_use]
    pub fn within(mut self, part: &str) -> Self {
        if self.0.code == ErrorCode::InvalidArgument {
            self.0.message = format!("{part}.{}", self.0.message);
        }
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self(Error::from_status(&status))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        envelope(self.0.code.http_status(), self.0.code, &self.0.message)
    }
}

/// Renders the error envelope.
pub fn envelope(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = json!({ "error": { "code": code.as_str(), "message": message } });
    (status, Json(body)).into_response()
}

/// Answers routes that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Answers a method a route does not take (the router adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// Turns a panic in a handler into a plain `internal` envelope (the panic is logged).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

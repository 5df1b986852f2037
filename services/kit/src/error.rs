//! The one error vocabulary of Swarm: [`ErrorCode`] maps once to gRPC status codes and once to
//! HTTP statuses, and [`Error`] carries a code with a message fit for clients. Internal causes are
//! logged where they happen and never sent.

use std::fmt;

use crate::store::StoreError;

/// Every way a Swarm call can fail, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule (400).
    InvalidArgument,
    /// The thing named does not exist, or the caller may not know it does (404).
    NotFound,
    /// The thing to create exists already (409).
    AlreadyExists,
    /// The thing is not in a state that allows the call (409).
    FailedPrecondition,
    /// No or bad credentials (401).
    Unauthenticated,
    /// Credentials that may not do this (403).
    PermissionDenied,
    /// A quota or rate limit was hit (429).
    ResourceExhausted,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// The route exists, but not with this HTTP method (405).
    MethodNotAllowed,
    /// A dependency is down; retrying later may work (503).
    Unavailable,
    /// The call ran out of time (504).
    DeadlineExceeded,
    /// A bug or an unexpected failure; details are in the server log (500).
    Internal,
}

/// Every code, for tables and tests.
pub const ALL_CODES: [ErrorCode; 12] = [
    ErrorCode::InvalidArgument,
    ErrorCode::NotFound,
    ErrorCode::AlreadyExists,
    ErrorCode::FailedPrecondition,
    ErrorCode::Unauthenticated,
    ErrorCode::PermissionDenied,
    ErrorCode::ResourceExhausted,
    ErrorCode::PayloadTooLarge,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Unavailable,
    ErrorCode::DeadlineExceeded,
    ErrorCode::Internal,
];

impl ErrorCode {
    /// Returns the snake_case name used in the REST error envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Internal => "internal",
        }
    }

    /// Returns the gRPC status code for this error.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::ResourceExhausted | Self::PayloadTooLarge => tonic::Code::ResourceExhausted,
            Self::MethodNotAllowed => tonic::Code::Unimplemented,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// Returns the HTTP status for this error.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::FailedPrecondition => StatusCode::CONFLICT,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a gRPC status code back to the vocabulary; codes outside it become `internal`,
    /// except transport-level ones (`cancelled`, `unknown` from a dropped connection) that mean
    /// the peer is unreachable.
    pub fn from_grpc(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition | Code::Aborted => Self::FailedPrecondition,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unavailable | Code::Cancelled => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
                Self::Internal
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error fit to send to a client: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A lowercase human sentence, without internal detail.
    pub message: String,
}

impl Error {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Builds an `invalid_argument` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// Builds a `not_found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Builds a `failed_precondition` error.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    /// Logs an internal cause and returns an `internal` error that does not reveal it.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// Builds an error from a gRPC status received from another service. Services check no
    /// caller's key, only the service token, so a refusal of credentials means the services
    /// disagree on `SWARM_SERVICE_TOKEN` (a misconfiguration, or a rotation under way): the
    /// service is out of this caller's reach (`unavailable`), not the user's key at fault.
    /// Either way a service out of reach is logged here, once.
    pub fn from_status(status: &tonic::Status) -> Self {
        // A tonic server whose `grpc-timeout` deadline passes answers CANCELLED with its
        // `TimeoutExpired` text: that is a deadline, not a dead peer.
        let timed_out = status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string();
        let token_refused = matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        );
        let code = if timed_out {
            ErrorCode::DeadlineExceeded
        } else if token_refused {
            ErrorCode::Unavailable
        } else {
            ErrorCode::from_grpc(status.code())
        };
        if token_refused {
            tracing::error!(
                grpc_message = status.message(),
                "a service refused this one's service token: SWARM_SERVICE_TOKEN differs between services"
            );
        } else if code == ErrorCode::Unavailable {
            tracing::warn!(grpc_message = status.message(), "service unavailable");
        }
        let message = match code {
            ErrorCode::Internal => "internal error".to_owned(),
            ErrorCode::Unavailable if token_refused || status.message().is_empty() => {
                "service unavailable".to_owned()
            }
            _ => status.message().to_owned(),
        };
        Self::new(code, message)
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.code.grpc_code(), error.message)
    }
}

impl From<StoreError> for Error {
    /// Maps storage failures: an unreachable or exhausted database is `unavailable`, and so is
    /// a transaction given up for another (worth trying again), a unique violation is
    /// `already_exists`, anything else is `internal` (and logged).
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::new(ErrorCode::Unavailable, "database unavailable")
            }
            StoreError::Contention(_) => {
                tracing::warn!(error = %error, "transaction given up for another");
                Self::new(ErrorCode::Unavailable, "the database is busy: try again")
            }
            StoreError::Conflict(_) => Self::new(ErrorCode::AlreadyExists, "it exists already"),
            StoreError::Refused(_) | StoreError::Failed(_) => Self::internal(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        // A too-large body and a wrong method are HTTP notions; gRPC reports them as resource
        // exhaustion and an unimplemented method, and a service that answers the latter is out
        // of step with its caller (internal).
        for code in ALL_CODES
            .into_iter()
            .filter(|c| ![ErrorCode::PayloadTooLarge, ErrorCode::MethodNotAllowed].contains(c))
        {
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code, "{code}");
        }
    }

    #[test]
    fn http_statuses_follow_the_api_contract() {
        let table: Vec<(ErrorCode, u16, &str)> = ALL_CODES
            .iter()
            .map(|c| (*c, c.http_status().as_u16(), c.as_str()))
            .collect();
        assert_eq!(
            table,
            vec![
                (ErrorCode::InvalidArgument, 400, "invalid_argument"),
                (ErrorCode::NotFound, 404, "not_found"),
                (ErrorCode::AlreadyExists, 409, "already_exists"),
                (ErrorCode::FailedPrecondition, 409, "failed_precondition"),
                (ErrorCode::Unauthenticated, 401, "unauthenticated"),
                (ErrorCode::PermissionDenied, 403, "permission_denied"),
                (ErrorCode::ResourceExhausted, 429, "rate_limited"),
                (ErrorCode::PayloadTooLarge, 413, "payload_too_large"),
                (ErrorCode::MethodNotAllowed, 405, "method_not_allowed"),
                (ErrorCode::Unavailable, 503, "unavailable"),
                (ErrorCode::DeadlineExceeded, 504, "deadline_exceeded"),
                (ErrorCode::Internal, 500, "internal"),
            ]
        );
    }

    #[test]
    fn a_refused_service_token_is_an_unavailable_service_not_the_callers_fault() {
        for status in [
            tonic::Status::unauthenticated("the service token is missing or wrong"),
            tonic::Status::permission_denied("no"),
        ] {
            let error = Error::from_status(&status);
            assert_eq!(
                (error.code, error.message.as_str()),
                (ErrorCode::Unavailable, "service unavailable")
            );
        }
    }

    #[test]
    fn a_server_side_timeout_is_a_deadline() {
        let status = tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert_eq!(
            Error::from_status(&status).code,
            ErrorCode::DeadlineExceeded
        );
        let dropped = tonic::Status::cancelled("connection closed");
        assert_eq!(Error::from_status(&dropped).code, ErrorCode::Unavailable);
    }

    #[test]
    fn internal_statuses_hide_their_message() {
        let status = tonic::Status::internal("connection string postgres://secret");
        assert_eq!(Error::from_status(&status).message, "internal error");
    }
}

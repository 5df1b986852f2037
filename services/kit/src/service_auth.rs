//! Calls between services carry a shared secret, `SWARM_SERVICE_TOKEN`, as
//! `authorization: Bearer <token>`, and every gRPC service refuses calls without it
//! (`UNAUTHENTICATED`), so a stray client cannot call a service port directly. Health checks,
//! reflection and the metrics service's Prometheus page stay open. Without a token, service
//! ports accept any caller (fine on loopback, as `swarm up` binds by default).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::metadata::{Ascii, MetadataValue};
use tower::{Layer, Service};

use crate::config::{ConfigError, env_value};

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The shared secret of the services, if one is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceToken(Option<Arc<str>>);

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "ServiceToken(set)"
        } else {
            "ServiceToken(none)"
        })
    }
}

impl ServiceToken {
    /// Wraps `token`; `None` leaves service ports open.
    pub fn new(token: Option<String>) -> Self {
        Self(token.map(Arc::from))
    }

    /// Reads `SWARM_SERVICE_TOKEN`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let token = Self::new(env_value("SWARM_SERVICE_TOKEN")?);
        token.validate()?;
        Ok(token)
    }

    /// Checks that a set token is long enough to be a secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.0 {
            Some(token) if token.chars().count() < MIN_TOKEN_CHARS => Err(ConfigError::new(
                "SWARM_SERVICE_TOKEN",
                "(hidden)",
                format!("must be at least {MIN_TOKEN_CHARS} characters"),
            )),
            _ => Ok(()),
        }
    }

    /// Tells whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Returns the `authorization` metadata value that calls carry.
    pub(crate) fn bearer(&self) -> Option<MetadataValue<Ascii>> {
        let token = self.0.as_ref()?;
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Tells whether `headers` carry this token (always, when none is set).
    fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compares every byte whatever the first difference, so timing tells nothing.
        presented.len() == token.len()
            && presented
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }

    /// Returns the layer that refuses calls without the token; `None` when no token is set.
    pub(crate) fn layer(&self) -> Option<RequireTokenLayer> {
        self.is_set().then(|| RequireTokenLayer {
            token: self.clone(),
        })
    }
}

/// Tells whether `path` stays open without the token.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") || path == "/metrics"
}

/// Refuses calls that do not carry the service token.
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    token: ServiceToken,
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`RequireTokenLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    token: ServiceToken,
}

impl<S, B, ResBody> Service<http::Request<B>> for RequireToken<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_open(request.uri().path()) || self.token.admits(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let refused = tonic::Status::unauthenticated(
            "this service answers other swarm services only: the service token is missing or wrong",
        )
        .into_http::<ResBody>();
        Box::pin(std::future::ready(Ok(refused)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_the_token_is_admitted() {
        let token = ServiceToken::new(Some("0123456789abcdef-secret".into()));
        assert!(token.admits(&headers(Some("Bearer 0123456789abcdef-secret"))));
        assert!(!token.admits(&headers(Some("Bearer 0123456789abcdef-secreT"))));
        assert!(!token.admits(&headers(Some("0123456789abcdef-secret"))));
        assert!(!token.admits(&headers(None)));
        assert!(
            ServiceToken::default().admits(&headers(None)),
            "no token, open"
        );
        assert!(ServiceToken::new(Some("short".into())).validate().is_err());
        assert_eq!(format!("{token:?}"), "ServiceToken(set)", "never printed");
    }

    #[test]
    fn health_reflection_and_scrapes_stay_open() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(is_open(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_open("/metrics"));
        assert!(!is_open("/swarm.tasks.v1.TaskService/CreateTask"));
    }
}

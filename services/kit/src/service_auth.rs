//! How services trust each other. Calls between services carry a shared secret,
//! `SWARM_SERVICE_TOKEN`, as `authorization: Bearer <token>`, and every gRPC service refuses
//! calls without it (`UNAUTHENTICATED`), so a stray client cannot call a service port directly.
//! Health checks, reflection and the metrics service's Prometheus page stay open. Without a
//! token, service ports accept any caller (fine on loopback, as `swarm up` binds by default).
//!
//! Optionally, services also speak TLS to each other: with a certificate and key
//! (`SWARM_TLS_CERT_FILE`, `SWARM_TLS_KEY_FILE`) every gRPC port serves TLS only, and calls to
//! `https://` service URLs verify the server against `SWARM_TLS_CA_FILE` (else the system's
//! authorities). With an authority set, each process also presents its certificate as a client
//! and every port demands one that the authority signed: mutual TLS.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tower::{Layer, Service};

use crate::config::{ConfigError, env_value};

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a service presents to the others and demands of them: the shared token, if one is set,
/// and TLS, if configured.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceCredentials {
    token: Option<Arc<str>>,
    tls: Option<Arc<ServiceTls>>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("token", &if self.is_set() { "set" } else { "none" })
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ServiceCredentials {
    /// Wraps `token`, without TLS; `None` leaves service ports open.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(Arc::from),
            tls: None,
        }
    }

    /// The same credentials, speaking `tls` between services.
    pub fn with_tls(self, tls: ServiceTls) -> Self {
        Self {
            tls: Some(Arc::new(tls)),
            ..self
        }
    }

    /// Reads `SWARM_SERVICE_TOKEN` and the TLS files `SWARM_TLS_CERT_FILE`,
    /// `SWARM_TLS_KEY_FILE` (both or neither) and `SWARM_TLS_CA_FILE`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let credentials = Self::new(env_value("SWARM_SERVICE_TOKEN")?);
        credentials.validate()?;
        let cert: Option<String> = env_value("SWARM_TLS_CERT_FILE")?;
        let key: Option<String> = env_value("SWARM_TLS_KEY_FILE")?;
        let ca: Option<String> = env_value("SWARM_TLS_CA_FILE")?;
        let read = |variable: &str, path: &str| {
            std::fs::read_to_string(Path::new(path))
                .map_err(|error| ConfigError::new(variable, path, error))
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((
                read("SWARM_TLS_CERT_FILE", &cert)?,
                read("SWARM_TLS_KEY_FILE", &key)?,
            )),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(ConfigError::new(
                    "SWARM_TLS_KEY_FILE",
                    "(unset)",
                    format!("is needed with SWARM_TLS_CERT_FILE={cert}"),
                ));
            }
            (None, Some(key)) => {
                return Err(ConfigError::new(
                    "SWARM_TLS_CERT_FILE",
                    "(unset)",
                    format!("is needed with SWARM_TLS_KEY_FILE={key}"),
                ));
            }
        };
        let authority = ca.map(|ca| read("SWARM_TLS_CA_FILE", &ca)).transpose()?;
        Ok(match (identity, authority) {
            (None, None) => credentials,
            (identity, authority) => credentials.with_tls(ServiceTls {
                identity,
                authority,
            }),
        })
    }

    /// Checks that a set token is long enough to be a secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.token {
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
        self.token.is_some()
    }

    /// Tells whether service ports serve TLS (a certificate is configured).
    pub fn serves_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.identity.is_some())
    }

    /// Returns the `authorization` metadata value that calls carry.
    pub(crate) fn bearer(&self) -> Option<MetadataValue<Ascii>> {
        let token = self.token.as_ref()?;
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Returns the TLS a server port speaks, if any: its certificate and, with an authority,
    /// the demand for a client certificate that authority signed.
    pub(crate) fn server_tls(&self) -> Option<ServerTlsConfig> {
        let tls = self.tls.as_ref()?;
        let (cert, key) = tls.identity.as_ref()?;
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        Some(match &tls.authority {
            Some(authority) => config.client_ca_root(Certificate::from_pem(authority)),
            None => config,
        })
    }

    /// Returns the TLS of calls to `host`: verified against the configured authority (else the
    /// system's), presenting this process's certificate when it has one.
    pub(crate) fn client_tls(&self, host: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().domain_name(host);
        let Some(tls) = &self.tls else {
            return config.with_native_roots();
        };
        let config = match &tls.authority {
            Some(authority) => config.ca_certificate(Certificate::from_pem(authority)),
            None => config.with_native_roots(),
        };
        match &tls.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }

    /// Tells whether `headers` carry this token (always, when none is set).
    fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
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

/// TLS between services, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceTls {
    /// This process's certificate and private key: served on its ports, presented on its calls.
    pub identity: Option<(String, String)>,
    /// The authority that signs every service's certificate; unset, servers are verified
    /// against the system's authorities and clients present no certificate.
    pub authority: Option<String>,
}

/// Tells whether `path` stays open without the token.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") || path == "/metrics"
}

/// Refuses calls that do not carry the service token.
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    token: ServiceCredentials,
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
    token: ServiceCredentials,
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
        let token = ServiceCredentials::new(Some("0123456789abcdef-secret".into()));
        assert!(token.admits(&headers(Some("Bearer 0123456789abcdef-secret"))));
        assert!(!token.admits(&headers(Some("Bearer 0123456789abcdef-secreT"))));
        assert!(!token.admits(&headers(Some("0123456789abcdef-secret"))));
        assert!(!token.admits(&headers(None)));
        assert!(
            ServiceCredentials::default().admits(&headers(None)),
            "no token, open"
        );
        assert!(
            ServiceCredentials::new(Some("short".into()))
                .validate()
                .is_err()
        );
        assert_eq!(
            format!("{token:?}"),
            r#"ServiceCredentials { token: "set", tls: false }"#,
            "never printed"
        );
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

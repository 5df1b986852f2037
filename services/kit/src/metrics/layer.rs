//! The request-metrics tower layer: every request a gRPC service or the gateway answers is
//! counted into the `swarm_request_duration_seconds` histogram by route (the route template or
//! the gRPC method, never the raw path, so label sets stay few), status and outcome, and runs
//! inside its service's [`Registry`] scope. Health checks, reflection and metric reports are
//! infrastructure, not traffic, and are not counted.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::{Registry, names};

/// Names a request's route from its method, URI and extensions; `None` leaves it uncounted.
pub type RouteOf = fn(&http::Method, &http::Uri, &http::Extensions) -> Option<String>;

/// Names a gRPC call by its method path (`/swarm.tasks.v1.TaskService/Claim`), leaving out
/// health checks, reflection and metric reports.
pub fn grpc_route(_: &http::Method, uri: &http::Uri, _: &http::Extensions) -> Option<String> {
    crate::trace::swarm_method(uri.path()).map(|_| uri.path().to_owned())
}

/// Measures every request of the wrapped service into a [`Registry`].
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    registry: Arc<Registry>,
    route_of: RouteOf,
}

impl RequestMetricsLayer {
    /// Measures into `registry`, naming routes with `route_of`.
    pub fn new(registry: Arc<Registry>, route_of: RouteOf) -> Self {
        Self { registry, route_of }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            registry: Arc::clone(&self.registry),
            route_of: self.route_of,
        }
    }
}

/// The service [`RequestMetricsLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    registry: Arc<Registry>,
    route_of: RouteOf,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<http::Request<B>> for RequestMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = (self.route_of)(request.method(), request.uri(), request.extensions());
        let grpc = is_grpc(&request);
        let registry = Arc::clone(&self.registry);
        let started = Instant::now();
        let answer = self.registry.scope(self.inner.call(request));
        Box::pin(async move {
            super::db::mark_span(&tracing::Span::current(), &registry);
            let result = answer.await;
            if let Some(route) = route {
                let (status, error) = match &result {
                    Ok(response) if grpc => grpc_status(response),
                    Ok(response) => (
                        response.status().as_u16().to_string(),
                        response.status().is_server_error(),
                    ),
                    Err(_) => ("failed".to_owned(), true),
                };
                let outcome = if error { "error" } else { "ok" };
                registry
                    .histogram(
                        &names::REQUEST_DURATION,
                        &[("route", &route), ("status", &status), ("outcome", outcome)],
                    )
                    .observe(started.elapsed());
            }
            result
        })
    }
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Reads a gRPC answer's status: an error travels in the headers of a trailers-only answer;
/// an answer with a body succeeded, as far as its headers tell.
fn grpc_status<B>(response: &http::Response<B>) -> (String, bool) {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    let server_side = matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::DataLoss
            | tonic::Code::Unimplemented
    );
    (format!("{code:?}"), server_side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_routes_leave_out_infrastructure() {
        let route = |path: &str| {
            grpc_route(
                &http::Method::POST,
                &path.parse().unwrap(),
                &http::Extensions::new(),
            )
        };
        assert_eq!(
            route("/swarm.tasks.v1.TaskService/Claim").as_deref(),
            Some("/swarm.tasks.v1.TaskService/Claim")
        );
        assert_eq!(route("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            route("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(route("/swarm.metrics.v1.MetricsService/Record"), None);
        assert_eq!(route("/no.such.Service/Call"), None);
    }

    #[test]
    fn grpc_errors_are_read_from_trailers_only_answers() {
        let answer = |status: Option<&str>| {
            let mut response = http::Response::new(());
            if let Some(status) = status {
                response
                    .headers_mut()
                    .insert("grpc-status", status.parse().unwrap());
            }
            grpc_status(&response)
        };
        assert_eq!(answer(None), ("Ok".to_owned(), false));
        assert_eq!(answer(Some("5")), ("NotFound".to_owned(), false));
        assert_eq!(answer(Some("14")), ("Unavailable".to_owned(), true));
    }
}

//! The gRPC server bootstrap every service uses: its routes plus `grpc.health.v1` and server
//! reflection v1 and v1alpha, served on a given listener until a shutdown future resolves, then drained;
//! and the health reporter that follows the service's database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::{Interceptor, Routes};
use tonic::transport::Server;

use crate::metrics::{Reporter, RequestMetricsLayer};
use crate::replicas::{ConnectOptions, Replicas};
use crate::service_auth::ServiceCredentials;

/// Why a gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("cannot build reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("grpc transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The largest message a service reads, and its clients read, where the default 4 MiB is too
/// small: a page of tasks whose payloads and results are large (up to 1 MiB of JSON each).
///
/// Calls between services are not compressed: they stay inside the cluster and are small, and
/// gzip cost more CPU per call (a fresh deflate state per message) than it saved on the wire.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Serves `routes`, health and reflection on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight calls to finish. `stop`, the service's token for its
/// long-lived work (waiting claims, streams, background loops), is cancelled as soon as
/// `shutdown` resolves, so open streams end and the drain can complete; and again when
/// serving ends for any other reason. With a metrics `reporter`, every call is measured into
/// its registry, and its last report is sent before this returns; with a service token in
/// `credentials`, calls without it are refused, and with a certificate the port serves TLS
/// only (see [`crate::service_auth`]).
/// Plain HTTP/1.1 is accepted beside gRPC, for routes such as the metrics service's Prometheus
/// page.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
    stop: CancellationToken,
    reporter: Option<Reporter>,
    credentials: &ServiceCredentials,
) -> Result<(), ServeError> {
    if !credentials.is_set() {
        tracing::warn!(
            addr = ?listener.local_addr().ok(),
            "SWARM_SERVICE_TOKEN is not set: this service's port accepts calls from anyone who reaches it"
        );
    }
    let (reflection, reflection_v1alpha) = reflection(&[])?;
    // The builder's own TCP_NODELAY applies only to listeners it binds; set it on each accepted
    // connection, or small answers wait for delayed ACKs (tens of milliseconds each).
    let connections = TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    let stopping = stop.clone();
    let measure = reporter.as_ref().map(|reporter| {
        RequestMetricsLayer::new(Arc::clone(reporter.registry()), crate::metrics::grpc_route)
    });
    let mut builder = Server::builder();
    if let Some(tls) = credentials.server_tls() {
        builder = builder.tls_config(tls)?;
    }
    let served = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .accept_http1(true)
        .trace_fn(request_span)
        .layer(tower::util::option_layer(measure))
        .layer(tower::util::option_layer(credentials.layer()))
        .add_routes(
            routes
                .add_service(reflection)
                .add_service(reflection_v1alpha),
        )
        .serve_with_incoming_shutdown(connections, async move {
            shutdown.await;
            stopping.cancel();
        })
        .await;
    stop.cancel();
    if let Some(reporter) = reporter {
        reporter.finished().await;
    }
    Ok(served?)
}

/// Server reflection over Swarm's services and health, as `grpc.reflection.v1` and as the
/// older `grpc.reflection.v1alpha` that grpcurl, Postman, evans and Python's grpcio-reflection
/// still ask for; listing only `listed` services when any are named.
pub fn reflection(
    listed: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        listed.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(swarm_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(*service),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Opens the server span of one incoming call, continuing the caller's trace; health checks,
/// reflection and metric reports are not traced.
fn request_span(request: &http::Request<()>) -> tracing::Span {
    let span = crate::trace::rpc_span(request.uri().path(), "server");
    crate::trace::continue_trace(&span, request.headers());
    span
}

/// A channel to another service, balanced across its replicas, whose calls carry the service
/// token and continue the caller's trace in a client span each.
pub type ServiceChannel = InterceptedService<Replicas, CallInterceptor>;

/// Adds the service token to each outgoing call (the trace context is added below it, by the
/// call's client span).
#[derive(Debug, Clone, Default)]
pub struct CallInterceptor {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for CallInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// Builds a channel to the gRPC service that `urls` names (one URL, or several separated by
/// commas, each an address or a host name: see [`Replicas`]), which connects on first use and
/// reconnects by itself: `TCP_NODELAY`, HTTP/2 keep-alives, a bound on connecting, (when given)
/// a deadline for every call made on it, the caller's trace context and the token of
/// `credentials` on every call, and TLS to `https://` URLs as `credentials` say.
pub fn lazy_channel(
    urls: &str,
    connect_timeout: Duration,
    call_timeout: Option<Duration>,
    credentials: &ServiceCredentials,
) -> Result<ServiceChannel, tonic::transport::Error> {
    let replicas = Replicas::new(
        urls,
        ConnectOptions {
            connect_timeout,
            call_timeout,
            credentials: credentials.clone(),
        },
    )?;
    Ok(ServiceChannel::new(
        replicas,
        CallInterceptor {
            token: credentials.bearer(),
        },
    ))
}

/// How often a service pings its database to keep its health status honest.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Marks `service` (and the server as a whole) `NOT_SERVING` while `pool` does not answer, and
/// `SERVING` again once it does, until `stop` resolves.
pub async fn report_database_health(
    pool: crate::db::Pool,
    health: tonic_health::server::HealthReporter,
    service: &'static str,
    stop: impl Future<Output = ()>,
) {
    use tonic_health::ServingStatus;
    let mut stop = std::pin::pin!(stop);
    let mut serving = true;
    let mut tick = tokio::time::interval(DATABASE_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let healthy = match tokio::time::timeout(crate::db::ACQUIRE_TIMEOUT, pool.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, service, "database check failed");
                false
            }
            Err(_) => {
                tracing::warn!(service, "database check timed out");
                false
            }
        };
        if healthy != serving {
            serving = healthy;
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status(service, status).await;
        }
    }
}

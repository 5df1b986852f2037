//! Calls to a service that runs as several replicas. A service URL setting names them: a
//! comma-separated list of URLs, each an address or a host name whose addresses are resolved
//! again every few seconds while calls are made (a Kubernetes headless Service, say).
//!
//! Each call goes to the less busy of two replicas picked at random (the power of two choices,
//! by calls in flight). A replica that cannot be reached is skipped, for a pause that doubles
//! with each failure in a row, until it answers again. A call that never reached a replica
//! (its connection could not be made) is sent to another one, whatever the method; a call to a
//! method its .proto marks `NO_SIDE_EFFECTS` is also sent again after a broken connection. Both
//! spend a retry budget, so a failing cluster does not see its load multiplied. Any other call
//! is never sent twice: its outcome is unknown, and only its caller can decide.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::retry::budget::{Budget, TpsBudget};

use crate::service_auth::ServiceCredentials;
use tower::{Service, ServiceExt};
use tracing::Instrument;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the addresses of a host name are used before they are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How long a replica that could not be reached is skipped after its first failure in a row;
/// each further failure doubles the pause, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest a replica is skipped before it is tried again.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// The retries every replica set may always make per second, beyond its share of calls.
const RETRIES_PER_SECOND: u32 = 10;
/// The share of calls that may be retried, over the last [`RETRY_WINDOW`].
const RETRY_SHARE: f32 = 0.2;
/// The window the retry budget counts calls over.
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// How each replica's connection is made and how long its calls may take.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The bound on making a connection.
    pub connect_timeout: Duration,
    /// The deadline of every call, when the callers set none of their own.
    pub call_timeout: Option<Duration>,
    /// The TLS of `https://` replicas.
    pub credentials: ServiceCredentials,
}

/// The replicas of one service, as a gRPC transport that balances calls across them. Clones
/// share the replicas, their connections and their state.
#[derive(Clone)]
pub struct Replicas {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("urls", &self.shared.urls)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// The replicas `urls` names (comma-separated `http://` URLs); nothing connects, and no
    /// name is resolved, until the first call.
    pub fn new(urls: &str, options: ConnectOptions) -> Result<Self, tonic::transport::Error> {
        let born = Instant::now();
        let mut fixed = Vec::new();
        let mut named = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
            let endpoint = Endpoint::from_shared(url.to_owned())?;
            let uri = endpoint.uri().clone();
            match uri
                .host()
                .map(|host| host.trim_matches(['[', ']']).parse::<IpAddr>())
            {
                Some(Ok(_)) | None => {
                    fixed.push(Arc::new(Replica::new(
                        uri.clone(),
                        endpoint,
                        &options,
                        &uri,
                    )?));
                }
                Some(Err(_)) => {
                    // Checked now, so that resolving the name later cannot fail on it.
                    configure(&uri, endpoint, &options, &uri)?;
                    named.push(HostName { uri });
                }
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                urls: urls.to_owned(),
                members: RwLock::new(fixed.clone().into()),
                fixed,
                named,
                options,
                born,
                resolved_at: AtomicU64::new(0),
                resolving: AtomicBool::new(false),
                first_resolution: tokio::sync::Mutex::new(()),
                budget: TpsBudget::new(RETRY_WINDOW, RETRIES_PER_SECOND, RETRY_SHARE),
            }),
        })
    }
}

impl Service<http::Request<Body>> for Replicas {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each replica's connection is made ready when a call is sent to it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let span = crate::trace::rpc_span(request.uri().path(), "client");
        crate::trace::inject(&span, request.headers_mut());
        let shared = Arc::clone(&self.shared);
        Box::pin(
            async move {
                let answer = shared.send(request).await;
                record_outcome(&answer);
                answer
            }
            .instrument(span),
        )
    }
}

/// A host name among the URLs, resolved to the addresses of its replicas.
struct HostName {
    uri: Uri,
}

struct Shared {
    urls: String,
    /// The replicas of URLs that name an address.
    fixed: Vec<Arc<Replica>>,
    /// The URLs that name a host.
    named: Vec<HostName>,
    /// Every replica known now: the fixed ones, then those the host names resolved to.
    members: RwLock<Arc<[Arc<Replica>]>>,
    options: ConnectOptions,
    /// The instant the millisecond clocks below count from.
    born: Instant,
    /// When the host names were last resolved, in milliseconds since `born` plus one (zero:
    /// never).
    resolved_at: AtomicU64,
    /// Whether a resolution is under way in the background.
    resolving: AtomicBool,
    /// Held by the call that resolves the host names the first time; the others wait for it.
    first_resolution: tokio::sync::Mutex<()>,
    budget: TpsBudget,
}

impl Shared {
    fn members(&self) -> Arc<[Arc<Replica>]> {
        Arc::clone(
            &self
                .members
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn send(
        self: Arc<Self>,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        self.refresh().await;
        let members = self.members();
        match &*members {
            [] => {
                return Err(Box::new(tonic::Status::unavailable(format!(
                    "no address of {} could be resolved",
                    self.urls
                ))));
            }
            // Nowhere else to send it: the call goes out as it is, and its body is not kept.
            [only] => {
                only.describe(&tracing::Span::current());
                return only.call(request).await;
            }
            _ => {}
        }
        let read_only = swarm_proto::is_read_only(request.uri().path());
        let (parts, body) = request.into_parts();
        // Every call between the services sends one message: keep it, to send it again.
        let body = body.collect().await?.to_bytes();
        self.budget.deposit();
        let mut tried = Vec::with_capacity(members.len());
        loop {
            let index = self.pick(&members, &tried);
            let replica = &members[index];
            replica.describe(&tracing::Span::current());
            let outcome = replica.call(attempt(&parts, &body)).await;
            let error = match outcome {
                Ok(response) => {
                    replica.reached();
                    return Ok(response);
                }
                Err(error) => error,
            };
            let unsent = never_sent(&*error);
            if unsent || !is_timeout(&*error) {
                replica.unreachable(self.now());
            }
            tried.push(index);
            let again = tried.len() < members.len() && (unsent || read_only);
            if !again || !self.budget.withdraw() {
                return Err(error);
            }
            tracing::debug!(replica = %replica.uri, %error, unsent, "call sent to another replica");
        }
    }

    /// The replica to send the next attempt to, among those not `tried`: the less busy of two
    /// that are not paused, picked at random; when every one is paused, the one whose pause
    /// ends first. There is always one: an attempt is made only while some are untried.
    fn pick(&self, members: &[Arc<Replica>], tried: &[usize]) -> usize {
        let now = self.now();
        let untried = || (0..members.len()).filter(|index| !tried.contains(index));
        let ready: Vec<usize> = untried()
            .filter(|&index| !members[index].is_paused(now))
            .collect();
        match ready.len() {
            0 => untried()
                .min_by_key(|&index| members[index].paused_until.load(Ordering::Relaxed))
                .unwrap_or(0),
            1 => ready[0],
            count => {
                let first = fastrand::usize(..count);
                let second = (first + 1 + fastrand::usize(..count - 1)) % count;
                let (first, second) = (ready[first], ready[second]);
                if members[second].in_flight.load(Ordering::Relaxed)
                    < members[first].in_flight.load(Ordering::Relaxed)
                {
                    second
                } else {
                    first
                }
            }
        }
    }

    /// Resolves the host names when they never were (the call waits for it) or when their
    /// addresses are older than [`RESOLVE_EVERY`] (in the background; the call goes on).
    async fn refresh(self: &Arc<Self>) {
        if self.named.is_empty() {
            return;
        }
        let resolved_at = self.resolved_at.load(Ordering::Acquire);
        if resolved_at == 0 {
            let _first = self.first_resolution.lock().await;
            if self.resolved_at.load(Ordering::Acquire) == 0 {
                self.resolve().await;
            }
        } else if self.now() + 1 - resolved_at >= millis(RESOLVE_EVERY)
            && !self.resolving.swap(true, Ordering::AcqRel)
        {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                shared.resolve().await;
                shared.resolving.store(false, Ordering::Release);
            });
        }
    }

    /// Resolves every host name and makes its addresses the replicas, keeping the connection
    /// and state of each address that stays. A name that cannot be resolved keeps the
    /// addresses it had.
    async fn resolve(&self) {
        let known = self.members();
        let mut members = self.fixed.clone();
        for name in &self.named {
            let host = name.uri.host().unwrap_or_default();
            let port = name.uri.port_u16().unwrap_or(80);
            let from_this_name =
                |replica: &&Arc<Replica>| replica.origin.as_ref() == Some(&name.uri);
            match tokio::net::lookup_host((host, port)).await {
                Ok(addresses) => {
                    let mut addresses: Vec<SocketAddr> = addresses.collect();
                    addresses.sort_unstable();
                    addresses.dedup();
                    for address in addresses {
                        let kept = known
                            .iter()
                            .filter(from_this_name)
                            .find(|replica| replica.address == Some(address));
                        match kept {
                            Some(replica) => members.push(Arc::clone(replica)),
                            None => match Replica::resolved(&name.uri, address, &self.options) {
                                Ok(replica) => members.push(Arc::new(replica)),
                                Err(error) => {
                                    tracing::warn!(%address, %error, "cannot call a resolved replica");
                                }
                            },
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(host, %error, "service host name cannot be resolved: its last addresses stay in use");
                    members.extend(known.iter().filter(from_this_name).cloned());
                }
            }
        }
        *self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = members.into();
        self.resolved_at.store(self.now() + 1, Ordering::Release);
    }
}

/// One replica: its connection, and what the balancing knows of it.
struct Replica {
    uri: Uri,
    /// The host-name URL it was resolved from, and its address, for a resolved replica.
    origin: Option<Uri>,
    address: Option<SocketAddr>,
    channel: Channel,
    in_flight: AtomicUsize,
    /// Failures to reach it in a row.
    failures: AtomicU32,
    /// Until when it is skipped, in milliseconds since the set was made.
    paused_until: AtomicU64,
}

impl Replica {
    /// The replica at `uri`, called through `endpoint` (see [`configure`]).
    fn new(
        uri: Uri,
        endpoint: Endpoint,
        options: &ConnectOptions,
        server_name: &Uri,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = configure(&uri, endpoint, options, server_name)?;
        Ok(Self {
            uri,
            origin: None,
            address: None,
            channel: endpoint.connect_lazy(),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            paused_until: AtomicU64::new(0),
        })
    }

    /// The replica at `address`, one of those `name` resolved to; its calls still name the
    /// host in their `:authority`.
    fn resolved(
        name: &Uri,
        address: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<Self, tonic::transport::Error> {
        let scheme = name.scheme_str().unwrap_or("http");
        let uri: Uri = format!("{scheme}://{address}")
            .parse()
            .unwrap_or_else(|_| name.clone());
        let endpoint = Endpoint::from(uri.clone()).origin(name.clone());
        Ok(Self {
            origin: Some(name.clone()),
            address: Some(address),
            ..Self::new(uri, endpoint, options, name)?
        })
    }

    /// Sends one attempt. A failure comes back as a gRPC status whose source is the cause: a
    /// run-out deadline as tonic reports it, and any other failure of the connection as
    /// `unavailable` (tonic would answer `unknown` or `cancelled` for some), so that callers can
    /// tell it is worth retrying.
    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _done = InFlight(&self.in_flight);
        self.channel
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| {
                let error: BoxError = error.into();
                let status = if is_timeout(&*error) {
                    tonic::Status::from_error(error)
                } else {
                    // The address stays in the log: answers never name the inside.
                    tracing::debug!(replica = %self.uri, %error, "call to a replica failed");
                    let mut status =
                        tonic::Status::unavailable("the connection to the service failed");
                    status.set_source(Arc::from(error));
                    status
                };
                Box::new(status) as BoxError
            })
    }

    /// Names this replica as the server of the call that `span` traces.
    fn describe(&self, span: &tracing::Span) {
        if let Some(host) = self.uri.host() {
            span.record("server.address", host);
        }
        if let Some(port) = self.uri.port_u16() {
            span.record("server.port", port);
        }
    }

    fn is_paused(&self, now: u64) -> bool {
        self.paused_until.load(Ordering::Relaxed) > now
    }

    fn reached(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            self.paused_until.store(0, Ordering::Relaxed);
            tracing::info!(replica = %self.uri, "replica answers again");
        }
    }

    fn unreachable(&self, now: u64) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        let pause = FIRST_PAUSE
            .saturating_mul(1 << failures.min(16))
            .min(LONGEST_PAUSE);
        self.paused_until
            .store(now + millis(pause), Ordering::Relaxed);
        if failures == 0 {
            tracing::warn!(replica = %self.uri, "replica cannot be reached: skipping it until it answers again");
        }
    }
}

/// Sets up `endpoint` for the replica at `uri`: `TCP_NODELAY`, keep-alives, the timeouts of
/// `options`, and TLS when `uri` is `https://`, verifying the server's certificate for the host
/// of `server_name` (the URL it was named by).
fn configure(
    uri: &Uri,
    endpoint: Endpoint,
    options: &ConnectOptions,
    server_name: &Uri,
) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(timeout) = options.call_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    if uri.scheme_str() == Some("https") {
        let host = server_name
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']']);
        endpoint = endpoint.tls_config(options.credentials.client_tls(host))?;
    }
    Ok(endpoint)
}

/// Counts a call out of its replica's calls in flight when it ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records on the current (client) span the gRPC status of an answer when it is known from
/// its headers (a failure is answered in them), or the failure to get one.
fn record_outcome(answer: &Result<http::Response<Body>, BoxError>) {
    let code = match answer {
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .and_then(|code| code.to_str().ok()?.parse::<i32>().ok()),
        Err(error) => Some(
            error
                .downcast_ref::<tonic::Status>()
                .map_or(tonic::Code::Unavailable, tonic::Status::code) as i32,
        ),
    };
    let span = tracing::Span::current();
    if let Some(code) = code {
        span.record("rpc.grpc.status_code", code);
        if code != 0 {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// One attempt of a call: the same head, and the kept body.
fn attempt(parts: &http::request::Parts, body: &Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(body.clone())));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Whether the call failed before anything was sent: its connection could not be made.
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| cause.is::<tonic::ConnectError>())
}

/// Whether the call ran out of its deadline: the replica may be slow, not gone.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| cause.is::<tonic::TimeoutExpired>())
}

fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_util::sync::CancellationToken;
    use tonic::Code;
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    fn options() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            call_timeout: Some(Duration::from_secs(2)),
            credentials: ServiceCredentials::default(),
        }
    }

    /// Serves gRPC health on `listener` until `stop`, with `status` as the server's overall
    /// status: the answer to a check tells which replica gave it.
    async fn serve(listener: TcpListener, status: ServingStatus, stop: CancellationToken) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                ),
        );
    }

    async fn replica(status: ServingStatus) -> (String, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        serve(listener, status, stop.clone()).await;
        (url, stop)
    }

    /// A URL nothing listens at.
    fn gone() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    async fn check(client: &mut HealthClient<Replicas>) -> Result<i32, tonic::Status> {
        let answer = client.check(HealthCheckRequest::default()).await?;
        Ok(answer.into_inner().status)
    }

    #[tokio::test]
    async fn calls_spread_across_every_replica() {
        let statuses = [
            ServingStatus::Unknown,
            ServingStatus::Serving,
            ServingStatus::NotServing,
        ];
        let mut urls = Vec::new();
        for status in statuses {
            urls.push(replica(status).await.0);
        }
        let client = HealthClient::new(Replicas::new(&urls.join(","), options()).unwrap());
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut client = client.clone();
            calls.spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..40 {
                    seen.push(check(&mut client).await.unwrap());
                }
                seen
            });
        }
        let seen: Vec<i32> = calls.join_all().await.concat();
        for status in statuses {
            let share = seen.iter().filter(|&&seen| seen == status as i32).count();
            assert!(
                share * 5 >= seen.len(),
                "{status:?} answered {share} of {} calls",
                seen.len()
            );
        }
    }

    #[tokio::test]
    async fn a_replica_that_refuses_connections_is_skipped_without_an_error() {
        let (live, _stop) = replica(ServingStatus::Serving).await;
        let (other, _other_stop) = replica(ServingStatus::Serving).await;
        // Health checks are not marked read-only: a call that never reached a replica is sent
        // to another whatever its method.
        let urls = format!("{},{live},{other}", gone());
        let mut client = HealthClient::new(Replicas::new(&urls, options()).unwrap());
        for _ in 0..100 {
            assert_eq!(
                check(&mut client).await.unwrap(),
                ServingStatus::Serving as i32
            );
        }
    }

    #[tokio::test]
    async fn a_host_name_reaches_the_addresses_it_resolves_to() {
        let (live, _stop) = replica(ServingStatus::Serving).await;
        let port = live.rsplit(':').next().unwrap();
        // `localhost` may also resolve to ::1, where nothing listens: that address is skipped.
        let named = format!("http://localhost:{port},{}", gone());
        let mut client = HealthClient::new(Replicas::new(&named, options()).unwrap());
        for _ in 0..20 {
            assert_eq!(
                check(&mut client).await.unwrap(),
                ServingStatus::Serving as i32
            );
        }
    }

    /// A URL where connections are accepted and closed at once, and the count of them.
    async fn breaker() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(connection);
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_broken_connection_answers_unavailable_and_a_write_is_not_sent_again() {
        let (first, first_accepted) = breaker().await;
        let (second, second_accepted) = breaker().await;
        let urls = format!("{first},{second}");
        let mut client = HealthClient::new(Replicas::new(&urls, options()).unwrap());
        let status = check(&mut client).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let accepted =
            first_accepted.load(Ordering::SeqCst) + second_accepted.load(Ordering::SeqCst);
        assert_eq!(accepted, 1, "a call that may have arrived went out again");
    }

    #[tokio::test]
    async fn with_every_replica_gone_a_call_fails_unavailable_at_once() {
        let urls = format!("{},{}", gone(), gone());
        let mut client = HealthClient::new(Replicas::new(&urls, options()).unwrap());
        let started = Instant::now();
        let status = check(&mut client).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(started.elapsed() < Duration::from_millis(500));
        let unresolved = Replicas::new("http://no-such-host.invalid:7001", options()).unwrap();
        let status = check(&mut HealthClient::new(unresolved)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }

    #[tokio::test]
    async fn a_replica_that_answers_again_gets_calls_again() {
        let (live, _stop) = replica(ServingStatus::Serving).await;
        let returning = gone();
        let urls = format!("{live},{returning}");
        let mut client = HealthClient::new(Replicas::new(&urls, options()).unwrap());
        for _ in 0..10 {
            assert_eq!(
                check(&mut client).await.unwrap(),
                ServingStatus::Serving as i32
            );
        }
        let listener = TcpListener::bind(returning.trim_start_matches("http://"))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        serve(listener, ServingStatus::NotServing, stop.clone()).await;
        let deadline = Instant::now() + LONGEST_PAUSE * 2;
        loop {
            if check(&mut client).await.unwrap() == ServingStatus::NotServing as i32 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the returned replica got no call"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
    }
}

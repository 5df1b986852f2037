//! The gateway's HTTP server: HTTP/1.1 (with its upgrades) and cleartext HTTP/2 by prior
//! knowledge on one port, as `axum::serve` offers, plus pings on quiet HTTP/2 connections. A
//! client connection that went silent (its host gone, or a NAT or load balancer that dropped it
//! without a word) leaves a ping unanswered and is closed, which ends its requests: a claim
//! waiting on it ends no later than its own wait would, and a graceful stop does not wait on it.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, warn};

/// What a stopping gateway adds to the request deadline before it stops waiting for open
/// connections: time for the answers of calls that ran to their deadline to go out.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, pinging an HTTP/2 client connection
/// quiet for `ping` and closing it when the ping goes unanswered as long; then stops accepting
/// and waits for the open connections to finish what they serve, for at most `drain`. A long
/// poll still open then is cut when the process ends, and its worker claims again (the queue
/// takes back what a cut answer carried).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    ping: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = auto::Builder::new(TokioExecutor::new());
    connections
        .http2()
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping);
    let open = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = connections
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = open.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, open.shutdown()).await.is_err() {
        warn!(
            drain_seconds = drain.as_secs(),
            "stopped waiting for connections still open"
        );
    }
}

/// Accepts the next connection, with `TCP_NODELAY` (answers are small and go out at once). A
/// connection reset before it was accepted is skipped; any other failure (out of file
/// descriptors) is logged and retried after a second, as hyper's servers do.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "cannot set tcp_nodelay");
                }
                return stream;
            }
            Err(failure) if is_connection_error(&failure) => {}
            Err(failure) => {
                error!(error = %failure, "cannot accept connections; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Tells whether `failure` concerns only the connection being accepted.
fn is_connection_error(failure: &io::Error) -> bool {
    matches!(
        failure.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

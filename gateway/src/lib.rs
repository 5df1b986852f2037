//! The Swarm REST gateway: JSON over HTTP in front of the gRPC services, with the API's error
//! envelope, strict request validation, request ids and health that asks every service.
//!
//! [`run`] serves it on a listener until shutdown; [`router`] builds it for in-process use.

pub mod conditional;
pub mod config;
pub mod error;
pub mod extract;
pub mod fields;
pub mod limits;
pub mod model;
mod routes;
pub mod state;
pub mod traced;

use std::future::Future;

use std::sync::Arc;

use axum::serve::ListenerExt;
use swarm_kit::RunError;
use swarm_kit::metrics::Reporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::GatewayConfig;
pub use routes::router;
pub use state::AppState;

/// Serves the gateway on `listener` until `shutdown` resolves; then it stops accepting, ends
/// open event streams and lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let stop = CancellationToken::new();
    let reporter = Reporter::start("gateway", &config.metrics, stop.clone())?;
    let app = router(
        AppState::new(config, stop.clone())?,
        reporter
            .as_ref()
            .map(|reporter| Arc::clone(reporter.registry())),
    );
    info!(addr = %listener.local_addr()?, "gateway listening");
    let stopping = stop.clone();
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "cannot set tcp_nodelay");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await?;
    if let Some(reporter) = reporter {
        reporter.finished().await;
    }
    info!("gateway stopped");
    Ok(())
}

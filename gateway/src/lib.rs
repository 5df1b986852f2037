//! The Swarm REST gateway: JSON over HTTP in front of the gRPC services, with the API's error
//! envelope, strict request validation, request ids and health that asks every service.
//!
//! [`run`] serves it on a listener until shutdown; [`router`] builds it for in-process use.

pub mod auth;
pub mod conditional;
pub mod config;
pub mod error;
pub mod extract;
pub mod fields;
pub mod fleet;
pub mod limits;
mod mcp;
pub mod model;
pub mod openapi;
mod routes;
pub mod rules;
pub mod schema;
mod serve;
pub mod state;
pub mod streams;
pub mod traced;
mod ui;
mod worker_grpc;
pub mod workers;

use std::future::Future;

use std::sync::Arc;

use swarm_kit::RunError;
use swarm_kit::config::ConfigError;
use swarm_kit::metrics::Reporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{Authenticator, KeyRegistry};

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
    let pool = config.database.connect().await?;
    let keys = KeyRegistry::new(auth::storage::open(pool.clone()).await?);
    let auth = if config.auth {
        match keys.bootstrap(config.admin_key.as_deref()).await {
            Ok(Some(secret)) => announce_admin_key(&secret),
            Ok(None) => {}
            Err(error) => {
                return Err(ConfigError::new("SWARM_ADMIN_KEY", "(hidden)", error).into());
            }
        }
        Authenticator::enforcing(keys, config.rate)
    } else {
        warn!("authentication is off (SWARM_AUTH=off): every caller acts as admin");
        Authenticator::off(Some(keys))
    };
    let client_ping = config.client_ping;
    // The calls still open when the gateway stops get as long as one call may take.
    let drain = config.request_timeout + serve::DRAIN_MARGIN;
    let stop = CancellationToken::new();
    let reporter = Reporter::start(
        "gateway",
        &config.metrics,
        &config.service_credentials,
        stop.clone(),
    )?;
    let app = router(
        AppState::new(config, stop.clone(), auth, pool.clone())?,
        reporter
            .as_ref()
            .map(|reporter| Arc::clone(reporter.registry())),
    );
    info!(addr = %listener.local_addr()?, "gateway listening");
    let stopping = stop.clone();
    serve::serve(listener, app, client_ping, drain, async move {
        shutdown.await;
        stopping.cancel();
    })
    .await;
    if let Some(reporter) = reporter {
        reporter.finished().await;
    }
    pool.close().await;
    info!("gateway stopped");
    Ok(())
}

/// Shows the admin key issued on first start, once, where the person starting Swarm sees it.
fn announce_admin_key(secret: &str) {
    warn!("no admin key existed, so one was issued; it is shown once, on standard error");
    eprintln!(
        "\n  Swarm issued the first admin API key (shown this once, keep it safe):\n\n      {secret}\n\n  \
         Send it as `Authorization: Bearer <key>`; create other keys with `swarm keys create`.\n"
    );
}

//! The frame every service runs in: its stop signal, its metrics reporter, its background jobs,
//! its gRPC health, and serving its routes until shutdown, then draining. A service's `run`
//! lists only what is its own (its state, its routes, its jobs) and hands them to a
//! [`ServiceHost`].

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tracing::info;

use crate::RunError;
use crate::config::ConfigError;
use crate::db::Pool;
use crate::metrics::{Registry, Reporter, ReporterConfig};
use crate::service_auth::ServiceCredentials;

/// One service's frame.
pub struct ServiceHost {
    name: &'static str,
    token: ServiceCredentials,
    stop: CancellationToken,
    reporter: Option<Reporter>,
    jobs: Vec<JoinHandle<()>>,
    health: HealthReporter,
    health_service: HealthServer<HealthService>,
}

impl std::fmt::Debug for ServiceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHost")
            .field("name", &self.name)
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

/// The health name that reports `SERVING` for as long as the process answers, whatever its
/// database does: for liveness probes, so that a database outage makes replicas unready
/// (the overall health, and the service's own name) without restarting them.
pub const LIVENESS: &str = "liveness";

impl ServiceHost {
    /// Frames service `name`, which reports its metrics as `metrics` says and demands `token`
    /// of its callers.
    pub fn new(
        name: &'static str,
        metrics: &ReporterConfig,
        token: &ServiceCredentials,
    ) -> Result<Self, ConfigError> {
        let stop = CancellationToken::new();
        let reporter = Reporter::start(name, metrics, token, stop.clone())?;
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        Ok(Self {
            name,
            token: token.clone(),
            stop,
            reporter,
            jobs: Vec::new(),
            health,
            health_service,
        })
    }

    /// The signal that the service is stopping: long work ends when it is cancelled.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The registry the service's metrics go to, when it reports any.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.reporter.as_ref().map(Reporter::registry)
    }

    /// Runs `job` in the background, measured as the service's own work; serving waits for it
    /// to end once the service stops.
    pub fn spawn(&mut self, job: impl Future<Output = ()> + Send + 'static) {
        let job = match self.registry() {
            Some(registry) => tokio::spawn(registry.scope_background(job)),
            None => tokio::spawn(job),
        };
        self.jobs.push(job);
    }

    /// Runs `refresh` before each metrics report, for levels that take a call to read; nothing
    /// when the service reports no metrics.
    pub fn refresh<F, Fut>(&mut self, refresh: F)
    where
        F: Fn(Arc<Registry>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if let Some(reporter) = &self.reporter {
            self.jobs.push(reporter.refresh(refresh));
        }
    }

    /// Reports `S` as serving; with `database`, its health follows the database from then on,
    /// and the database's pool is measured.
    pub async fn serving<S: NamedService>(&mut self, database: Option<&Pool>) {
        self.health.set_serving::<S>().await;
        self.health
            .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
            .await;
        let Some(pool) = database else {
            return;
        };
        if let Some(registry) = self.registry() {
            pool.report_to(registry);
        }
        let job = crate::grpc::report_database_health(
            pool.clone(),
            self.health.clone(),
            S::NAME,
            self.stop.clone().cancelled_owned(),
        );
        self.jobs.push(tokio::spawn(job));
    }

    /// Routes holding the service's gRPC health, for its own services to join.
    pub fn routes(&self) -> Routes {
        Routes::new(self.health_service.clone())
    }

    /// Serves `routes` (with reflection) on `listener` until `shutdown` resolves; then stops
    /// accepting, lets in-flight calls finish, and waits for the background jobs.
    pub async fn serve(
        self,
        listener: TcpListener,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        info!(service = self.name, addr = %listener.local_addr()?, "service listening");
        let served = crate::grpc::serve(
            listener,
            routes,
            shutdown,
            self.stop.clone(),
            self.reporter,
            &self.token,
        )
        .await;
        for job in self.jobs {
            let _ = job.await;
        }
        info!(service = self.name, "service stopped");
        Ok(served?)
    }
}

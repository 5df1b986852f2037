//! Reporting to the metrics service: every interval, a service's whole [`Registry`] (cumulative
//! totals, current levels) goes to `swarm.metrics.v1.MetricsService/Record` in one call, and
//! once more at shutdown. Reporting never blocks a request: requests only touch atomics, and a
//! metrics service that is down or slow costs the reports sent meanwhile, nothing else.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use swarm_proto::metrics::v1::metrics_service_client::MetricsServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::config::{ConfigError, check_not_zero, check_service_url, env_value, override_millis};
use crate::grpc::ServiceChannel;
use crate::service_auth::ServiceCredentials;

/// A periodic refresh runs no more often than once per this many times its own duration.
const REFRESH_SHARE: u32 = 50;

/// How long a report may take before it is given up.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how often a process reports its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReporterConfig {
    /// The metrics service; unset, nothing is measured or reported (`SWARM_METRICS_URL`).
    pub url: Option<String>,
    /// How often reports are sent (`SWARM_METRICS_INTERVAL_MS`).
    pub interval: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            url: None,
            interval: Duration::from_secs(5),
        }
    }
}

impl ReporterConfig {
    /// Reads the defaults overridden by the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(url) = env_value("SWARM_METRICS_URL")? {
            config.url = Some(url);
        }
        override_millis(&mut config.interval, "SWARM_METRICS_INTERVAL_MS")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            check_service_url("SWARM_METRICS_URL", url)?;
        }
        check_not_zero("SWARM_METRICS_INTERVAL_MS", self.interval.is_zero())
    }
}

/// A service's metrics and the task that reports them.
#[derive(Debug)]
pub struct Reporter {
    registry: Arc<Registry>,
    reporting: JoinHandle<()>,
    interval: Duration,
    stop: CancellationToken,
}

impl Reporter {
    /// Starts reporting the metrics of `service` as `config` says, with calls carrying `token`,
    /// until `stop` is cancelled; `None` when no metrics service is configured.
    pub fn start(
        service: &str,
        config: &ReporterConfig,
        token: &ServiceCredentials,
        stop: CancellationToken,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let channel = crate::grpc::lazy_channel(url, REPORT_TIMEOUT, Some(REPORT_TIMEOUT), token)
            .map_err(|error| ConfigError::new("SWARM_METRICS_URL", url, error))?;
        let registry = Registry::new(service);
        let reporting = tokio::spawn(report(
            Arc::clone(&registry),
            MetricsServiceClient::new(channel),
            config.interval,
            stop.clone(),
        ));
        Ok(Some(Self {
            registry,
            reporting,
            interval: config.interval,
            stop,
        }))
    }

    /// Returns the registry the service measures into.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Runs `refresh` once per report interval, in this service's scope, until the stop token
    /// is cancelled: for levels that take a call to read (a count in the database, say). A
    /// refresh that grows slow (a count over a table that grows) is run less often, so that it
    /// takes at most a fiftieth of the time.
    pub fn refresh<F, Fut>(&self, refresh: F) -> JoinHandle<()>
    where
        F: Fn(Arc<Registry>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (registry, interval, stop) =
            (Arc::clone(&self.registry), self.interval, self.stop.clone());
        tokio::spawn(async move {
            loop {
                let started = tokio::time::Instant::now();
                registry
                    .scope_background(refresh(Arc::clone(&registry)))
                    .await;
                let pause = interval.max(started.elapsed() * REFRESH_SHARE);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(started + pause) => {}
                }
            }
        })
    }

    /// Waits for the last report, sent once the stop token is cancelled.
    pub async fn finished(self) {
        let _ = self.reporting.await;
    }
}

async fn report(
    registry: Arc<Registry>,
    mut client: MetricsServiceClient<ServiceChannel>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        match client.record(registry.report()).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(service = registry.service(), "metrics reports resumed");
            }
            Ok(_) => {}
            Err(status) if !failing && !last => {
                failing = true;
                tracing::warn!(
                    service = registry.service(),
                    error = status.message(),
                    "cannot report metrics; reports are dropped until the metrics service answers"
                );
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

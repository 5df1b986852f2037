//! The tasks service's configuration: defaults, then environment variables.

use std::time::Duration;
use swarm_kit::config::defaults;

use swarm_kit::config::{
    ConfigError, check_not_zero, check_service_url, override_from_env, override_millis,
};
use swarm_kit::db::DatabaseConfig;

use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;

use crate::domain::{QueueSettings, RetryPolicy};

/// Everything the tasks service needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksConfig {
    /// Its database (`SWARM_TASKS_DATABASE_URL`, else `DATABASE_URL`).
    pub database: DatabaseConfig,
    /// The agents service, which claims consult (`SWARM_AGENTS_URL`).
    pub agents_url: String,
    /// The cache service, which keeps agent profiles between claims (`SWARM_CACHE_URL`).
    pub cache_url: String,
    /// How long an online agent's profile is reused for its claims, unless the agent changes
    /// first; zero asks the agents service on every claim (`SWARM_AGENT_PROFILE_TTL_MS`).
    pub agent_profile_ttl: Duration,
    /// Where the service reports its metrics (`SWARM_METRICS_URL`, `SWARM_METRICS_INTERVAL_MS`).
    pub metrics: ReporterConfig,
    /// The secret every call between services carries (`SWARM_SERVICE_TOKEN`).
    pub service_credentials: ServiceCredentials,
    /// Backoff after the first failed attempt (`SWARM_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Longest backoff (`SWARM_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// How often waiting claims and watches look again without a wake-up (`SWARM_POLL_INTERVAL_MS`).
    pub poll_interval: Duration,
    /// How often expired leases are swept (`SWARM_LEASE_SWEEP_INTERVAL_MS`).
    pub lease_sweep_interval: Duration,
    /// How long finished tasks are kept; zero keeps them forever (`SWARM_TASK_RETENTION_HOURS`).
    pub retention: Duration,
    /// The most task watchers (gRPC watches, and the gateway's event streams) at once; more
    /// are refused as exhausted (`SWARM_MAX_WATCHERS`).
    pub max_watchers: usize,
    /// The memory finished tasks kept for reads may take, in MiB (`SWARM_FINISHED_CACHE_MB`).
    pub finished_cache_mb: u64,
    /// Milliseconds this process's clock is taken to run ahead of the true time. Always zero
    /// but in tests, which skew a replica to show that replicas agree whatever their clocks say
    /// (times come from the database's clock); not read from the environment.
    pub clock_skew_millis: i64,
    /// Whether this is the only tasks service on its database, which lets it serve task reads
    /// from memory; on PostgreSQL an advisory lock holds other tasks services off while it runs
    /// (`SWARM_TASKS_SOLE_WRITER`; `swarm up` sets it unless told otherwise).
    pub sole_writer: bool,
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            database: DatabaseConfig::local(16),
            agents_url: defaults::AGENTS_URL.to_owned(),
            cache_url: defaults::CACHE_URL.to_owned(),
            agent_profile_ttl: Duration::from_secs(1),
            metrics: ReporterConfig::default(),
            service_credentials: ServiceCredentials::default(),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            lease_sweep_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_watchers: 10_000,
            finished_cache_mb: 64,
            clock_skew_millis: 0,
            sole_writer: false,
        }
    }
}

impl TasksConfig {
    /// Reads the defaults overridden by the environment, and validates them.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.database.read_env("tasks")?;
        override_from_env(&mut config.agents_url, &["SWARM_AGENTS_URL"])?;
        override_from_env(&mut config.cache_url, &["SWARM_CACHE_URL"])?;
        config.metrics = ReporterConfig::from_env()?;
        config.service_credentials = ServiceCredentials::from_env()?;
        override_millis(&mut config.agent_profile_ttl, "SWARM_AGENT_PROFILE_TTL_MS")?;
        override_millis(&mut config.retry_base, "SWARM_RETRY_BASE_MS")?;
        override_millis(&mut config.retry_max, "SWARM_RETRY_MAX_MS")?;
        override_millis(&mut config.poll_interval, "SWARM_POLL_INTERVAL_MS")?;
        override_millis(
            &mut config.lease_sweep_interval,
            "SWARM_LEASE_SWEEP_INTERVAL_MS",
        )?;
        override_from_env(&mut config.max_watchers, &["SWARM_MAX_WATCHERS"])?;
        override_from_env(&mut config.finished_cache_mb, &["SWARM_FINISHED_CACHE_MB"])?;
        override_from_env(&mut config.sole_writer, &["SWARM_TASKS_SOLE_WRITER"])?;
        let mut retention_hours = config.retention.as_secs() / 3600;
        override_from_env(&mut retention_hours, &["SWARM_TASK_RETENTION_HOURS"])?;
        config.retention = Duration::from_secs(retention_hours * 3600);
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        check_service_url("SWARM_AGENTS_URL", &self.agents_url)?;
        check_service_url("SWARM_CACHE_URL", &self.cache_url)?;
        self.metrics.validate()?;
        self.service_credentials.validate()?;
        check_not_zero("SWARM_POLL_INTERVAL_MS", self.poll_interval.is_zero())?;
        check_not_zero("SWARM_MAX_WATCHERS", self.max_watchers == 0)?;
        check_not_zero(
            "SWARM_LEASE_SWEEP_INTERVAL_MS",
            self.lease_sweep_interval.is_zero(),
        )?;
        if self.retry_base > self.retry_max {
            return Err(ConfigError::new(
                "SWARM_RETRY_BASE_MS",
                self.retry_base.as_millis(),
                "must not exceed SWARM_RETRY_MAX_MS",
            ));
        }
        Ok(())
    }

    /// Returns the queue's pacing.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            retry: RetryPolicy {
                base: self.retry_base,
                max: self.retry_max,
            },
            poll_interval: self.poll_interval,
            max_watchers: self.max_watchers,
            finished_cache_bytes: self.finished_cache_mb * 1024 * 1024,
            ..QueueSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TasksConfig::default().validate().unwrap();
    }

    #[test]
    fn unusable_values_are_named() {
        let config = TasksConfig {
            database: DatabaseConfig::local(1).at("mysql://x"),
            ..TasksConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().name, "DATABASE_URL");
        let config = TasksConfig {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(1),
            ..TasksConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().name, "SWARM_RETRY_BASE_MS");
    }
}

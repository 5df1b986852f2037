//! The agents service's configuration: defaults, then environment variables.

use std::time::Duration;
use swarm_kit::config::defaults;

use swarm_kit::config::{ConfigError, check_not_zero, check_service_url, override_from_env};
use swarm_kit::db::DatabaseConfig;
use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;

/// Everything the agents service needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsConfig {
    /// Its database (`SWARM_AGENTS_DATABASE_URL`, else `DATABASE_URL`).
    pub database: DatabaseConfig,
    /// The cache service, through which agent configs are served (`SWARM_CACHE_URL`).
    pub cache_url: String,
    /// Where the service reports its metrics (`SWARM_METRICS_URL`, `SWARM_METRICS_INTERVAL_MS`).
    pub metrics: ReporterConfig,
    /// The secret every call between services carries (`SWARM_SERVICE_TOKEN`).
    pub service_credentials: ServiceCredentials,
    /// How long an agent stays online after a heartbeat (`SWARM_AGENT_TTL_SECONDS`).
    pub agent_ttl: Duration,
    /// Milliseconds this process's clock is taken to run ahead of the true time. Always zero
    /// but in tests, which skew a replica to show that replicas agree whatever their clocks say
    /// (times come from the database's clock); not read from the environment.
    pub clock_skew_millis: i64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            database: DatabaseConfig::local(8),
            cache_url: defaults::CACHE_URL.to_owned(),
            metrics: ReporterConfig::default(),
            service_credentials: ServiceCredentials::default(),
            agent_ttl: Duration::from_secs(30),
            clock_skew_millis: 0,
        }
    }
}

impl AgentsConfig {
    /// Reads the defaults overridden by the environment, and validates them.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.database.read_env("agents")?;
        override_from_env(&mut config.cache_url, &["SWARM_CACHE_URL"])?;
        config.metrics = ReporterConfig::from_env()?;
        config.service_credentials = ServiceCredentials::from_env()?;
        let mut ttl_seconds = config.agent_ttl.as_secs();
        override_from_env(&mut ttl_seconds, &["SWARM_AGENT_TTL_SECONDS"])?;
        config.agent_ttl = Duration::from_secs(ttl_seconds);
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        check_service_url("SWARM_CACHE_URL", &self.cache_url)?;
        self.metrics.validate()?;
        self.service_credentials.validate()?;
        check_not_zero("SWARM_AGENT_TTL_SECONDS", self.agent_ttl.is_zero())
    }
}

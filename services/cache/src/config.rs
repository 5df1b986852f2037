//! The cache service's configuration: defaults, then environment variables.

use std::time::Duration;

use swarm_kit::config::{ConfigError, check_not_zero, override_from_env};
use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;

/// Everything the cache service needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Redis (`REDIS_URL`: `redis://`, or `rediss://` for TLS); unset keeps entries in process
    /// memory only.
    pub redis_url: Option<String>,
    /// The certificate authority (a PEM file) a `rediss://` Redis's certificate must chain to
    /// (`SWARM_REDIS_CA_FILE`); unset, the system's trusted authorities.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// The namespace every Redis key lives under (`SWARM_CACHE_NAMESPACE`).
    pub namespace: String,
    /// The memory tier's size bound in bytes (`SWARM_CACHE_MAX_BYTES`).
    pub max_bytes: u64,
    /// The longest any Redis call may take (`SWARM_REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
    /// Where the service reports its metrics (`SWARM_METRICS_URL`, `SWARM_METRICS_INTERVAL_MS`).
    pub metrics: ReporterConfig,
    /// The secret every call between services carries (`SWARM_SERVICE_TOKEN`).
    pub service_credentials: ServiceCredentials,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_ca_file: None,
            namespace: "swarm:cache:".to_owned(),
            max_bytes: 64 * 1024 * 1024,
            redis_timeout: Duration::from_millis(250),
            metrics: ReporterConfig::default(),
            service_credentials: ServiceCredentials::default(),
        }
    }
}

impl CacheConfig {
    /// Reads the defaults overridden by the environment, and validates them.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(url) = swarm_kit::config::env_value::<String>("REDIS_URL")? {
            config.redis_url = Some(url);
        }
        config.redis_ca_file = swarm_kit::config::env_value("SWARM_REDIS_CA_FILE")?;
        override_from_env(&mut config.namespace, &["SWARM_CACHE_NAMESPACE"])?;
        override_from_env(&mut config.max_bytes, &["SWARM_CACHE_MAX_BYTES"])?;
        swarm_kit::config::override_millis(&mut config.redis_timeout, "SWARM_REDIS_TIMEOUT_MS")?;
        config.metrics = ReporterConfig::from_env()?;
        config.service_credentials = ServiceCredentials::from_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.service_credentials.validate()?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                url,
                "must start with redis://",
            ));
        }
        check_not_zero("SWARM_CACHE_MAX_BYTES", self.max_bytes == 0)?;
        check_not_zero("SWARM_REDIS_TIMEOUT_MS", self.redis_timeout.is_zero())
    }
}

//! The metrics service's configuration: defaults, then environment variables.

use std::time::Duration;

use swarm_kit::config::{ConfigError, check_not_zero, env_value, override_from_env};
use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;

use crate::domain::Targets;

/// Everything the metrics service needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// The sliding window that counts, latencies and targets cover
    /// (`SWARM_METRICS_WINDOW_SECONDS`).
    pub window: Duration,
    /// The targets, each overridable (`SWARM_TARGET_API_P95_MS`, `SWARM_TARGET_DB_P95_MS`,
    /// `SWARM_TARGET_MEMORY_MB`, `SWARM_TARGET_CPU_PERCENT`, `SWARM_TARGET_CACHE_HIT_RATE`,
    /// `SWARM_TARGET_ERROR_RATE`).
    pub targets: Targets,
    /// Where the service reports its own metrics: itself, usually.
    pub reporter: ReporterConfig,
    /// The secret every call between services carries (`SWARM_SERVICE_TOKEN`).
    pub service_credentials: ServiceCredentials,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            targets: Targets::default(),
            reporter: ReporterConfig::default(),
            service_credentials: ServiceCredentials::default(),
        }
    }
}

impl MetricsConfig {
    /// Reads the defaults overridden by the environment, and validates them.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(seconds) = env_value::<u64>("SWARM_METRICS_WINDOW_SECONDS")? {
            config.window = Duration::from_secs(seconds);
        }
        let targets = &mut config.targets;
        override_from_env(&mut targets.api_p95_ms, &["SWARM_TARGET_API_P95_MS"])?;
        override_from_env(&mut targets.db_query_p95_ms, &["SWARM_TARGET_DB_P95_MS"])?;
        override_from_env(&mut targets.memory_mb, &["SWARM_TARGET_MEMORY_MB"])?;
        override_from_env(&mut targets.cpu_percent, &["SWARM_TARGET_CPU_PERCENT"])?;
        override_from_env(
            &mut targets.cache_hit_rate,
            &["SWARM_TARGET_CACHE_HIT_RATE"],
        )?;
        override_from_env(&mut targets.error_rate, &["SWARM_TARGET_ERROR_RATE"])?;
        config.reporter = ReporterConfig::from_env()?;
        config.service_credentials = ServiceCredentials::from_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_not_zero("SWARM_METRICS_WINDOW_SECONDS", self.window.is_zero())?;
        let targets = &self.targets;
        for (name, value) in [
            ("SWARM_TARGET_API_P95_MS", targets.api_p95_ms),
            ("SWARM_TARGET_DB_P95_MS", targets.db_query_p95_ms),
            ("SWARM_TARGET_MEMORY_MB", targets.memory_mb),
            ("SWARM_TARGET_CPU_PERCENT", targets.cpu_percent),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::new(name, value, "must be a positive number"));
            }
        }
        for (name, value) in [
            ("SWARM_TARGET_CACHE_HIT_RATE", targets.cache_hit_rate),
            ("SWARM_TARGET_ERROR_RATE", targets.error_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::new(name, value, "must be a ratio from 0 to 1"));
            }
        }
        self.service_credentials.validate()?;
        self.reporter.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_targets_are_named() {
        MetricsConfig::default().validate().unwrap();
        let mut config = MetricsConfig::default();
        config.targets.cache_hit_rate = 80.0;
        assert_eq!(
            config.validate().unwrap_err().name,
            "SWARM_TARGET_CACHE_HIT_RATE"
        );
        let mut config = MetricsConfig::default();
        config.targets.api_p95_ms = -1.0;
        assert_eq!(
            config.validate().unwrap_err().name,
            "SWARM_TARGET_API_P95_MS"
        );
    }
}

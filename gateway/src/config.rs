//! The gateway's configuration: where each service listens, its key database, authentication,
//! and request limits.

use std::time::Duration;
use swarm_kit::config::defaults;

use swarm_kit::config::{
    ConfigError, check_not_zero, check_service_url, env_value, override_from_env,
};
use swarm_kit::db::DatabaseConfig;
use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;

use crate::auth::Rate;
use crate::auth::keys::{MAX_KEY_CHARS, MIN_KEY_CHARS, is_well_formed};

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Where API keys are kept (`SWARM_GATEWAY_DATABASE_URL`, else `DATABASE_URL`); key
    /// checks are cached, so a small pool suffices.
    pub database: DatabaseConfig,
    /// Whether API keys are checked (`SWARM_AUTH`, `on` or `off`).
    pub auth: bool,
    /// The first admin key, set without a prompt (`SWARM_ADMIN_KEY`, at least 32 characters).
    pub admin_key: Option<String>,
    /// Requests per key (`SWARM_RATE_LIMIT_PER_SECOND`, zero for none, and
    /// `SWARM_RATE_LIMIT_BURST`).
    pub rate: Rate,
    /// The tasks service (`SWARM_TASKS_URL`).
    pub tasks_url: String,
    /// The agents service (`SWARM_AGENTS_URL`).
    pub agents_url: String,
    /// The cache service (`SWARM_CACHE_URL`).
    pub cache_url: String,
    /// The metrics service, when deployed, where the gateway reports its own metrics and reads
    /// everyone's (`SWARM_METRICS_URL`, `SWARM_METRICS_INTERVAL_MS`).
    pub metrics: ReporterConfig,
    /// The secret the gateway's calls to the services carry (`SWARM_SERVICE_TOKEN`).
    pub service_credentials: ServiceCredentials,
    /// The longest a request may take, beyond a claim's own wait (`SWARM_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// The largest request body, in bytes (`SWARM_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// Whether GET answers carry an `ETag` and honour `If-None-Match` (`SWARM_ETAGS`, `on` or
    /// `off`).
    pub etags: bool,
    /// Browser origins allowed to call the API, or `*` for any; empty allows none
    /// (`SWARM_CORS_ORIGINS`, comma-separated).
    pub cors_origins: Vec<String>,
    /// The most task watches (event streams, worker `WatchTask`) one key may hold open at once
    /// (`SWARM_MAX_STREAMS_PER_KEY`).
    pub max_streams_per_key: usize,
    /// How long an HTTP/2 client connection may stay quiet before the gateway pings it, and how
    /// long the ping may go unanswered before the gateway closes it, ending its requests
    /// (`SWARM_CLIENT_PING_MS`).
    pub client_ping: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            database: DatabaseConfig::local(4),
            auth: true,
            admin_key: None,
            rate: Rate {
                per_second: 1000.0,
                burst: 2000,
            },
            tasks_url: defaults::TASKS_URL.to_owned(),
            agents_url: defaults::AGENTS_URL.to_owned(),
            cache_url: defaults::CACHE_URL.to_owned(),
            metrics: ReporterConfig::default(),
            service_credentials: ServiceCredentials::default(),
            request_timeout: Duration::from_secs(30),
            body_limit: 2 * 1024 * 1024,
            cors_origins: Vec::new(),
            etags: true,
            max_streams_per_key: 1000,
            client_ping: Duration::from_secs(10),
        }
    }
}

impl GatewayConfig {
    /// Reads the defaults overridden by the environment, and validates them.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.database.read_env("gateway")?;
        override_switch(&mut config.auth, "SWARM_AUTH")?;
        override_switch(&mut config.etags, "SWARM_ETAGS")?;
        config.admin_key = env_value("SWARM_ADMIN_KEY")?;
        override_from_env(
            &mut config.rate.per_second,
            &["SWARM_RATE_LIMIT_PER_SECOND"],
        )?;
        override_from_env(&mut config.rate.burst, &["SWARM_RATE_LIMIT_BURST"])?;
        override_from_env(&mut config.tasks_url, &["SWARM_TASKS_URL"])?;
        override_from_env(&mut config.agents_url, &["SWARM_AGENTS_URL"])?;
        override_from_env(&mut config.cache_url, &["SWARM_CACHE_URL"])?;
        config.metrics = ReporterConfig::from_env()?;
        config.service_credentials = ServiceCredentials::from_env()?;
        swarm_kit::config::override_millis(
            &mut config.request_timeout,
            "SWARM_REQUEST_TIMEOUT_MS",
        )?;
        swarm_kit::config::override_millis(&mut config.client_ping, "SWARM_CLIENT_PING_MS")?;
        override_from_env(&mut config.body_limit, &["SWARM_BODY_LIMIT_BYTES"])?;
        override_from_env(
            &mut config.max_streams_per_key,
            &["SWARM_MAX_STREAMS_PER_KEY"],
        )?;
        if let Some(origins) = swarm_kit::config::env_value::<String>("SWARM_CORS_ORIGINS")? {
            config.cors_origins = origins
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .map(str::to_owned)
                .collect();
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        if let Some(key) = &self.admin_key
            && !is_well_formed(key)
        {
            return Err(ConfigError::new(
                "SWARM_ADMIN_KEY",
                "(hidden)",
                format!("must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} visible ascii characters"),
            ));
        }
        if !(self.rate.per_second.is_finite() && self.rate.per_second >= 0.0) {
            return Err(ConfigError::new(
                "SWARM_RATE_LIMIT_PER_SECOND",
                self.rate.per_second,
                "must be zero (no limit) or a positive number",
            ));
        }
        check_not_zero("SWARM_MAX_STREAMS_PER_KEY", self.max_streams_per_key == 0)?;
        check_not_zero("SWARM_CLIENT_PING_MS", self.client_ping.is_zero())?;
        if self.rate.per_second > 0.0 {
            check_not_zero("SWARM_RATE_LIMIT_BURST", self.rate.burst == 0)?;
        }
        let urls = [
            ("SWARM_TASKS_URL", Some(&self.tasks_url)),
            ("SWARM_AGENTS_URL", Some(&self.agents_url)),
            ("SWARM_CACHE_URL", Some(&self.cache_url)),
        ];
        for (name, url) in urls {
            if let Some(url) = url {
                check_service_url(name, url)?;
            }
        }
        self.metrics.validate()?;
        self.service_credentials.validate()?;
        check_not_zero("SWARM_REQUEST_TIMEOUT_MS", self.request_timeout.is_zero())?;
        for origin in &self.cors_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::new(
                    "SWARM_CORS_ORIGINS",
                    origin,
                    "must be origins such as https://app.example.com, or *",
                ));
            }
        }
        if self.body_limit < 1024 {
            return Err(ConfigError::new(
                "SWARM_BODY_LIMIT_BYTES",
                self.body_limit,
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

/// Overwrites `target` with the `on` or `off` in environment variable `name`, if set.
fn override_switch(target: &mut bool, name: &str) -> Result<(), ConfigError> {
    match env_value::<String>(name)?.as_deref() {
        None => {}
        Some("on") => *target = true,
        Some("off") => *target = false,
        Some(other) => return Err(ConfigError::new(name, other, "must be on or off")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_must_be_http() {
        let config = GatewayConfig {
            agents_url: "127.0.0.1:50052".into(),
            ..GatewayConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().name, "SWARM_AGENTS_URL");
        GatewayConfig::default().validate().unwrap();
    }
}

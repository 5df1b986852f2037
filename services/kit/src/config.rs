//! Configuration helpers: every process starts from typed defaults, then reads `SWARM_*` (and
//! the standard `DATABASE_URL`, `REDIS_URL`, `OTEL_*`) variables over them, then applies flags;
//! a bad value stops the start with a message that names the variable.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// Where each role listens unless told otherwise (`SWARM_<ROLE>_ADDR`), and where the others
/// find it (`SWARM_<ROLE>_URL`).
pub mod defaults {
    use const_format::concatcp;

    /// The gateway's address.
    pub const GATEWAY_ADDR: &str = "127.0.0.1:8080";
    /// The tasks service's address.
    pub const TASKS_ADDR: &str = "127.0.0.1:50051";
    /// The agents service's address.
    pub const AGENTS_ADDR: &str = "127.0.0.1:50052";
    /// The cache service's address.
    pub const CACHE_ADDR: &str = "127.0.0.1:50053";
    /// The metrics service's address.
    pub const METRICS_ADDR: &str = "127.0.0.1:50054";
    /// The gateway, as clients call it.
    pub const GATEWAY_URL: &str = concatcp!("http://", GATEWAY_ADDR);
    /// The tasks service, as the other roles call it.
    pub const TASKS_URL: &str = concatcp!("http://", TASKS_ADDR);
    /// The agents service, as the other roles call it.
    pub const AGENTS_URL: &str = concatcp!("http://", AGENTS_ADDR);
    /// The cache service, as the other roles call it.
    pub const CACHE_URL: &str = concatcp!("http://", CACHE_ADDR);
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable or flag.
    pub name: String,
    /// The value given.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error for `name` set to `value`.
    pub fn new(name: &str, value: impl Display, reason: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Reads and parses the environment variable `name`; `None` when it is unset or empty.
pub fn env_value<T>(name: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|error| ConfigError::new(name, &text, error)),
        _ => Ok(None),
    }
}

/// Overwrites `target` with the first of `names` that is set in the environment.
pub fn override_from_env<T>(target: &mut T, names: &[&str]) -> Result<(), ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    for name in names {
        if let Some(value) = env_value(name)? {
            *target = value;
            return Ok(());
        }
    }
    Ok(())
}

/// Overwrites the duration `target` with the milliseconds in environment variable `name`, if set.
pub fn override_millis(target: &mut Duration, name: &str) -> Result<(), ConfigError> {
    let mut millis = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
    override_from_env(&mut millis, &[name])?;
    *target = Duration::from_millis(millis);
    Ok(())
}

/// Checks a database URL: `sqlite:...` or `postgres...`.
pub fn check_database_url(name: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")
    {
        Ok(())
    } else {
        Err(ConfigError::new(
            name,
            url,
            "must start with sqlite: or postgres:",
        ))
    }
}

/// Checks the URLs of a service's replicas: one or more `http://...` or `https://...` URLs,
/// separated by commas.
pub fn check_service_url(name: &str, urls: &str) -> Result<(), ConfigError> {
    let mut each = urls.split(',').map(str::trim);
    if each.all(|url| url.starts_with("http://") || url.starts_with("https://")) {
        Ok(())
    } else {
        Err(ConfigError::new(
            name,
            urls,
            "must be one or more http:// or https:// urls, separated by commas",
        ))
    }
}

/// Checks that a count or interval is not zero.
pub fn check_not_zero(name: &str, is_zero: bool) -> Result<(), ConfigError> {
    if is_zero {
        Err(ConfigError::new(name, 0, "must be at least 1"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_keep_the_default() {
        let mut value = 7u32;
        override_from_env(&mut value, &["SWARM_TEST_SURELY_UNSET_VARIABLE"]).unwrap();
        assert_eq!(value, 7);
    }

    #[test]
    fn urls_are_checked_by_scheme() {
        assert!(check_database_url("DATABASE_URL", "sqlite://data/x.db").is_ok());
        assert!(check_database_url("DATABASE_URL", "postgres://h/db").is_ok());
        assert_eq!(
            check_database_url("DATABASE_URL", "mysql://h/db")
                .unwrap_err()
                .name,
            "DATABASE_URL"
        );
        assert!(check_service_url("SWARM_TASKS_URL", "http://127.0.0.1:1").is_ok());
        assert!(check_service_url("SWARM_TASKS_URL", "127.0.0.1:1").is_err());
        assert!(
            check_service_url("SWARM_TASKS_URL", "http://10.0.0.1:7001, http://tasks:7001").is_ok()
        );
        assert!(check_service_url("SWARM_TASKS_URL", "http://10.0.0.1:7001,").is_err());
    }

    #[test]
    fn path_variable_does_not_parse_as_a_number() {
        // PATH is set on every machine and is not a number.
        let error = env_value::<u32>("PATH").unwrap_err();
        assert_eq!(error.name, "PATH");
    }
}

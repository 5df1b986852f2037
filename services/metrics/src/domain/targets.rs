//! The performance targets the platform reports against, and the alert book: a target breached
//! by the window's figures opens an alert (logged once), which stays with the time it began
//! until the figures recover.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::figures::Figures;

/// Fewer requests or lookups than this in the window are too few to judge a rate by.
pub const MIN_SAMPLES: u64 = 20;

/// The figures the platform must stay within.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// API latency, 95th percentile, in milliseconds (`SWARM_TARGET_API_P95_MS`).
    pub api_p95_ms: f64,
    /// Database statement latency, 95th percentile, in milliseconds (`SWARM_TARGET_DB_P95_MS`).
    pub db_query_p95_ms: f64,
    /// Resident memory of any process, in MB (`SWARM_TARGET_MEMORY_MB`).
    pub memory_mb: f64,
    /// CPU use of any process over the window, in percent of one core (`SWARM_TARGET_CPU_PERCENT`).
    pub cpu_percent: f64,
    /// The lowest cache hit rate, 0 to 1 (`SWARM_TARGET_CACHE_HIT_RATE`).
    pub cache_hit_rate: f64,
    /// The highest API error rate, 0 to 1 (`SWARM_TARGET_ERROR_RATE`).
    pub error_rate: f64,
}

impl Default for Targets {
    /// The seed's targets.
    fn default() -> Self {
        Self {
            api_p95_ms: 200.0,
            db_query_p95_ms: 100.0,
            memory_mb: 512.0,
            cpu_percent: 70.0,
            cache_hit_rate: 0.8,
            error_rate: 0.001,
        }
    }
}

/// A target the figures breach.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The target's name, such as `api_p95_ms`.
    pub name: &'static str,
    /// The measured figure.
    pub value: f64,
    /// The target.
    pub target: f64,
    /// A sentence for humans.
    pub message: String,
}

/// A breach that has lasted since some time.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The breach, as last evaluated.
    pub breach: Breach,
    /// When it began.
    pub since: SystemTime,
}

impl Targets {
    /// Returns every target that `figures` breach.
    pub fn breaches(&self, figures: &Figures) -> Vec<Breach> {
        let mut breaches = Vec::new();
        let mut check = |name, value: f64, target: f64, breached: bool, message: String| {
            if breached {
                breaches.push(Breach {
                    name,
                    value,
                    target,
                    message,
                });
            }
        };
        let mut check_p95 = |name, what, p95: f64, samples: u64, target: f64| {
            check(
                name,
                p95,
                target,
                samples > 0 && p95 > target,
                format!("{what} p95 is {p95:.1} ms, above the {target} ms target"),
            );
        };
        let api = &figures.api;
        check_p95(
            "api_p95_ms",
            "api request",
            api.latency.p95,
            api.total,
            self.api_p95_ms,
        );
        let database = &figures.database;
        check_p95(
            "db_query_p95_ms",
            "database statement",
            database.query_latency.p95,
            database.queries,
            self.db_query_p95_ms,
        );
        check(
            "error_rate",
            api.error_rate(),
            self.error_rate,
            api.total >= MIN_SAMPLES && api.error_rate() > self.error_rate,
            format!(
                "{} of {} api requests failed ({:.2} %), above the {:.2} % target",
                api.errors,
                api.total,
                api.error_rate() * 100.0,
                self.error_rate * 100.0
            ),
        );
        if let Some(hit_rate) = figures.cache.hit_rate() {
            let lookups = figures.cache.hits + figures.cache.misses;
            check(
                "cache_hit_rate",
                hit_rate,
                self.cache_hit_rate,
                lookups >= MIN_SAMPLES && hit_rate < self.cache_hit_rate,
                format!(
                    "cache hit rate is {:.1} % over {lookups} lookups, below the {:.1} % target",
                    hit_rate * 100.0,
                    self.cache_hit_rate * 100.0
                ),
            );
        }
        if let Some((service, bytes)) = busiest(&figures.memory_bytes) {
            let megabytes = bytes / 1_048_576.0;
            check(
                "memory_mb",
                megabytes,
                self.memory_mb,
                megabytes > self.memory_mb,
                format!(
                    "{service} uses {megabytes:.1} MB of memory, above the {} MB target",
                    self.memory_mb
                ),
            );
        }
        if let Some((service, percent)) = busiest(&figures.cpu_percent) {
            check(
                "cpu_percent",
                percent,
                self.cpu_percent,
                percent > self.cpu_percent,
                format!(
                    "{service} used {percent:.1} % cpu over the window, above the {} % target",
                    self.cpu_percent
                ),
            );
        }
        breaches
    }
}

fn busiest(levels: &BTreeMap<String, f64>) -> Option<(&str, f64)> {
    levels
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(service, level)| (service.as_str(), *level))
}

/// The alerts open now.
#[derive(Debug, Default)]
pub struct AlertBook {
    open: Mutex<BTreeMap<&'static str, Alert>>,
}

impl AlertBook {
    /// Opens alerts for new breaches, refreshes the figures of lasting ones and closes those
    /// that recovered, logging each opening and closing.
    pub fn update(&self, breaches: Vec<Breach>, now: SystemTime) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let breached: Vec<&'static str> = breaches.iter().map(|breach| breach.name).collect();
        open.retain(|name, alert| {
            let lasting = breached.contains(name);
            if !lasting {
                tracing::info!(
                    target_name = name,
                    value = alert.breach.value,
                    "target met again"
                );
            }
            lasting
        });
        for breach in breaches {
            match open.get_mut(breach.name) {
                Some(alert) => alert.breach = breach,
                None => {
                    tracing::warn!(
                        target_name = breach.name,
                        value = breach.value,
                        target = breach.target,
                        message = %breach.message,
                        "target breached"
                    );
                    open.insert(breach.name, Alert { breach, since: now });
                }
            }
        }
    }

    /// Returns the open alerts, by name.
    pub fn open(&self) -> Vec<Alert> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::figures::{Latency, Requests};

    fn slow_api(p95: f64) -> Figures {
        Figures {
            api: Requests {
                total: 100,
                errors: 0,
                latency: Latency {
                    p50: 1.0,
                    p95,
                    p99: p95,
                },
            },
            ..Figures::default()
        }
    }

    #[test]
    fn each_target_is_judged_on_its_figure() {
        let targets = Targets::default();
        assert!(targets.breaches(&slow_api(150.0)).is_empty());
        let breaches = targets.breaches(&slow_api(250.0));
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].name, "api_p95_ms");
        assert_eq!(breaches[0].value, 250.0);

        let mut figures = slow_api(1.0);
        figures.api.errors = 1;
        assert_eq!(targets.breaches(&figures)[0].name, "error_rate");
        figures.api = Requests {
            total: 5,
            errors: 5,
            ..Requests::default()
        };
        assert!(
            targets.breaches(&figures).is_empty(),
            "too few requests to judge"
        );

        let mut figures = Figures::default();
        figures.cache.hits = 10;
        figures.cache.misses = 30;
        figures
            .memory_bytes
            .insert("tasks".into(), 600.0 * 1_048_576.0);
        let names: Vec<_> = targets.breaches(&figures).iter().map(|b| b.name).collect();
        assert_eq!(names, ["cache_hit_rate", "memory_mb"]);
    }

    #[test]
    fn alerts_keep_their_start_until_they_recover() {
        let book = AlertBook::default();
        let targets = Targets::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        book.update(targets.breaches(&slow_api(300.0)), start);
        book.update(
            targets.breaches(&slow_api(400.0)),
            start + Duration::from_secs(5),
        );
        let open = book.open();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].since, start);
        assert_eq!(open[0].breach.value, 400.0);
        book.update(
            targets.breaches(&slow_api(10.0)),
            start + Duration::from_secs(10),
        );
        assert!(book.open().is_empty());
    }
}

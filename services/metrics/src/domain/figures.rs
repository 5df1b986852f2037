//! The figures an operator reads first, computed from a [`Snapshot`]: counts and latencies over
//! the window (requests, statements, cache lookups), and current levels (pools, tasks, memory).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use swarm_kit::metrics::{LATENCY_BOUNDS, names};

use super::aggregator::{Increment, Instance, Snapshot};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Latency {
    fn of(buckets: &[u64]) -> Self {
        Self {
            p50: percentile_ms(buckets, 0.50),
            p95: percentile_ms(buckets, 0.95),
            p99: percentile_ms(buckets, 0.99),
        }
    }
}

/// Requests of one group (a route, a service, everything) within the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    /// Requests answered.
    pub total: u64,
    /// Requests that failed on the server's side.
    pub errors: u64,
    /// Their latency.
    pub latency: Latency,
}

impl Requests {
    /// Returns `errors / total`, zero without requests.
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.total).unwrap_or(0.0)
    }
}

/// One route's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The service that served it.
    pub service: String,
    /// The route template or gRPC method.
    pub route: String,
    /// Its requests.
    pub requests: Requests,
}

/// Cache lookups within the window, and the entries held now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cache {
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Entries held (the fullest cache replica).
    pub entries: u64,
}

impl Cache {
    /// Returns `hits / (hits + misses)`, or `None` without lookups.
    pub fn hit_rate(&self) -> Option<f64> {
        ratio(self.hits, self.hits + self.misses)
    }
}

/// Database figures: pool levels now, statements within the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Database {
    /// Connections open, over every pool.
    pub pool_size: u64,
    /// Connections in use.
    pub checked_out: u64,
    /// Connections idle.
    pub idle: u64,
    /// Statements run.
    pub queries: u64,
    /// Statements slower than the threshold.
    pub slow_queries: u64,
    /// Statement latency.
    pub query_latency: Latency,
}

/// Everything the summary and the targets need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// The window covered.
    pub window: Duration,
    /// Every request of every service.
    pub requests: Requests,
    /// Requests to the public API: the gateway's, or every request when no gateway reports.
    pub api: Requests,
    /// Per service and route, busiest first.
    pub routes: Vec<Route>,
    /// Database figures.
    pub database: Database,
    /// Cache figures.
    pub cache: Cache,
    /// Tasks per status, as the tasks service counted them last.
    pub tasks: BTreeMap<String, u64>,
    /// How long tasks claimed within the window had waited to be claimed.
    pub queue_wait: Latency,
    /// Resident memory in bytes per service (its largest replica).
    pub memory_bytes: BTreeMap<String, f64>,
    /// CPU use in percent of one core over the window per service (its busiest replica).
    pub cpu_percent: BTreeMap<String, f64>,
    /// The processes reporting: service, instance, last report.
    pub reporters: Vec<(String, String, SystemTime)>,
}

impl Figures {
    /// Computes the figures of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut figures = Self {
            window: snapshot.window,
            ..Self::default()
        };
        figures.add_requests(snapshot);
        figures.add_database(snapshot);
        figures.add_cache(snapshot);
        let freshest_tasks = snapshot
            .instances
            .iter()
            .filter(|instance| gauges(instance, names::TASKS.name).next().is_some())
            .max_by_key(|instance| instance.last_seen);
        if let Some(instance) = freshest_tasks {
            for (labels, value) in gauges(instance, names::TASKS.name) {
                if let Some(status) = labels.get("status") {
                    figures.tasks.insert(status.clone(), whole(value));
                }
            }
        }
        for instance in &snapshot.instances {
            for (_, bytes) in gauges(instance, names::PROCESS_RESIDENT_MEMORY.name) {
                keep_max(&mut figures.memory_bytes, &instance.service, bytes);
            }
            if let (Some((first_at, first)), Some((last_at, last))) =
                (instance.cpu_history.front(), instance.cpu_history.back())
            {
                let wall = last_at.duration_since(*first_at).as_secs_f64();
                if wall > 0.0 {
                    let percent = (last - first).max(0.0) / wall * 100.0;
                    keep_max(&mut figures.cpu_percent, &instance.service, percent);
                }
            }
            figures.reporters.push((
                instance.service.clone(),
                instance.instance.clone(),
                instance.last_seen,
            ));
        }
        figures
    }

    fn add_requests(&mut self, snapshot: &Snapshot) {
        let mut all = Histogram::default();
        let mut gateway = Histogram::default();
        let mut routes: BTreeMap<(String, String), Histogram> = BTreeMap::new();
        for ((service, (name, labels)), increment) in &snapshot.increments {
            let Increment::Histogram(buckets, _) = increment else {
                continue;
            };
            if name != names::REQUEST_DURATION.name {
                continue;
            }
            let label = |wanted: &str| {
                labels
                    .iter()
                    .find(|(name, _)| name == wanted)
                    .map(|(_, value)| value.as_str())
            };
            let error = label("outcome") == Some("error");
            let route = label("route").unwrap_or("unknown").to_owned();
            all.add(buckets, error);
            if service == "gateway" {
                gateway.add(buckets, error);
            }
            routes
                .entry((service.clone(), route))
                .or_default()
                .add(buckets, error);
        }
        self.api = if gateway.total() > 0 {
            gateway.requests()
        } else {
            all.requests()
        };
        self.requests = all.requests();
        self.routes = routes
            .into_iter()
            .map(|((service, route), histogram)| Route {
                service,
                route,
                requests: histogram.requests(),
            })
            .collect();
        self.routes
            .sort_by_key(|route| std::cmp::Reverse(route.requests.total));
    }

    fn add_database(&mut self, snapshot: &Snapshot) {
        let mut statements = Histogram::default();
        let mut waits = Histogram::default();
        for ((_, (name, _)), increment) in &snapshot.increments {
            match increment {
                Increment::Histogram(buckets, _) if name == names::DB_QUERY_DURATION.name => {
                    statements.add(buckets, false);
                }
                Increment::Histogram(buckets, _) if name == names::TASK_QUEUE_WAIT.name => {
                    waits.add(buckets, false);
                }
                Increment::Count(count) if name == names::DB_SLOW_QUERIES.name => {
                    self.database.slow_queries += whole(*count);
                }
                _ => {}
            }
        }
        self.queue_wait = Latency::of(&waits.buckets);
        self.database.queries = statements.total();
        self.database.query_latency = Latency::of(&statements.buckets);
        for instance in &snapshot.instances {
            let level = |name| {
                gauges(instance, name)
                    .map(|(_, value)| whole(value))
                    .sum::<u64>()
            };
            self.database.pool_size += level(names::DB_POOL_SIZE.name);
            self.database.checked_out += level(names::DB_POOL_IN_USE.name);
            self.database.idle += level(names::DB_POOL_IDLE.name);
        }
    }

    fn add_cache(&mut self, snapshot: &Snapshot) {
        for ((_, (name, _)), increment) in &snapshot.increments {
            let Increment::Count(count) = increment else {
                continue;
            };
            let counter = match name.as_str() {
                name if name == names::CACHE_HITS.name => &mut self.cache.hits,
                name if name == names::CACHE_MISSES.name => &mut self.cache.misses,
                name if name == names::CACHE_EVICTIONS.name => &mut self.cache.evictions,
                _ => continue,
            };
            *counter += whole(*count);
        }
        self.cache.entries = snapshot
            .instances
            .iter()
            .flat_map(|instance| gauges(instance, names::CACHE_ENTRIES.name))
            .map(|(_, value)| whole(value))
            .max()
            .unwrap_or(0);
    }
}

/// Buckets summed over several series, with the failed share counted apart.
#[derive(Debug)]
struct Histogram {
    buckets: Vec<u64>,
    errors: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; LATENCY_BOUNDS.len() + 1],
            errors: 0,
        }
    }
}

impl Histogram {
    fn add(&mut self, buckets: &[u64], error: bool) {
        for (sum, count) in self.buckets.iter_mut().zip(buckets) {
            *sum += count;
        }
        if error {
            self.errors += buckets.iter().sum::<u64>();
        }
    }

    fn total(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn requests(&self) -> Requests {
        Requests {
            total: self.total(),
            errors: self.errors,
            latency: Latency::of(&self.buckets),
        }
    }
}

/// The gauges `name` of one process, with their labels.
fn gauges<'a>(
    instance: &'a Instance,
    name: &'a str,
) -> impl Iterator<Item = (&'a HashMap<String, String>, f64)> + 'a {
    instance
        .families
        .iter()
        .filter(move |family| family.name == name)
        .flat_map(|family| &family.series)
        .map(|series| (&series.labels, series.value))
}

fn keep_max(levels: &mut BTreeMap<String, f64>, service: &str, value: f64) {
    let level = levels.entry(service.to_owned()).or_insert(value);
    *level = level.max(value);
}

/// A reported count or level as a whole number (they are whole; negative ones are nonsense).
fn whole(value: f64) -> u64 {
    // Truncation is intended: the values are whole numbers carried as doubles.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = value.max(0.0).round() as u64;
    whole
}

#[allow(clippy::cast_precision_loss)]
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Estimates the `quantile` of the observations counted in `buckets` (over
/// [`LATENCY_BOUNDS`] and +Inf), in milliseconds, interpolating within the bucket it falls in
/// as Prometheus's `histogram_quantile` does; zero without observations.
#[allow(clippy::cast_precision_loss)]
pub fn percentile_ms(buckets: &[u64], quantile: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = quantile * total as f64;
    let mut seen = 0u64;
    for (index, &count) in buckets.iter().enumerate() {
        if count > 0 && (seen + count) as f64 >= rank {
            let lower = index
                .checked_sub(1)
                .map_or(0.0, |below| LATENCY_BOUNDS[below]);
            let Some(&upper) = LATENCY_BOUNDS.get(index) else {
                return lower * 1000.0; // the +Inf bucket: the largest finite bound
            };
            let within = (rank - seen as f64) / count as f64;
            return (lower + (upper - lower) * within) * 1000.0;
        }
        seen += count;
    }
    LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1] * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Aggregator;
    use crate::domain::aggregator::tests::{buckets, report, take};

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let mut counts = vec![0; LATENCY_BOUNDS.len() + 1];
        // 100 observations spread over the bucket (0.1 ms, 0.25 ms].
        counts[1] = 100;
        assert!((percentile_ms(&counts, 0.5) - 0.175).abs() < 1e-9);
        assert!((percentile_ms(&counts, 0.99) - 0.2485).abs() < 1e-9);
        // Observations past the last bound report that bound.
        let last = LATENCY_BOUNDS.len();
        counts[last] = 10_000;
        assert_eq!(percentile_ms(&counts, 0.99), 10_000.0);
        assert_eq!(percentile_ms(&[0; LATENCY_BOUNDS.len() + 1], 0.5), 0.0);
    }

    #[test]
    fn the_api_is_the_gateway_when_one_reports() {
        let aggregator = Aggregator::new(Duration::from_secs(60));
        take(&aggregator, report("tasks", "a", "/t", buckets(7), 0.0));
        let figures = Figures::of(&aggregator.snapshot());
        assert_eq!(
            figures.api.total, 7,
            "without a gateway, every request counts"
        );
        take(
            &aggregator,
            report("gateway", "g", "GET /x", buckets(3), 0.0),
        );
        let figures = Figures::of(&aggregator.snapshot());
        assert_eq!(figures.requests.total, 10);
        assert_eq!(figures.api.total, 3);
        assert_eq!(figures.routes[0].route, "/t");
        assert_eq!(figures.routes[1].service, "gateway");
        assert_eq!(figures.reporters.len(), 2);
    }
}

//! The metrics every process keeps about itself, in the Prometheus data model: counters, gauges
//! and latency histograms by label set, held in one [`Registry`] per service and reported whole
//! (cumulative totals) to the metrics service by the [`reporter`]. The names that the metrics
//! service summarises live in [`names`]; [`layer`] measures requests, [`db`] database queries.

pub mod db;
pub mod layer;
pub mod names;
pub mod reporter;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use swarm_proto::metrics::v1 as pb;

pub use layer::{RequestMetricsLayer, grpc_route};
pub use names::MetricDef;
pub use reporter::{Reporter, ReporterConfig};

/// The upper bounds, in seconds, of every latency histogram's buckets (a last +Inf bucket is
/// implied): fine below a millisecond, where healthy calls sit, and up to ten seconds.
pub const LATENCY_BOUNDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A total that only grows.
    Counter,
    /// A level that goes up and down.
    Gauge,
    /// Latencies counted into [`LATENCY_BOUNDS`] buckets.
    Histogram,
}

/// A total that only grows.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` to the total.
    pub fn add(&self, n: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + n).to_bits())
            });
    }

    /// Sets the total, for counters that mirror a component's own running total.
    pub fn set_total(&self, total: f64) {
        self.0.store(total.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A level that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the level.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Latencies counted into [`LATENCY_BOUNDS`] buckets, with their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS.partition_point(|bound| *bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn series(&self, labels: HashMap<String, String>) -> pb::Series {
        pb::Series {
            labels,
            value: 0.0,
            bucket_counts: self
                .buckets
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            // Nanosecond totals stay exact in an f64 for over a hundred days of summed latency.
            #[allow(clippy::cast_precision_loss)]
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Label pairs, sorted by name, that tell a metric's series apart.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

#[derive(Debug)]
struct Family {
    def: &'static MetricDef,
    series: HashMap<Labels, Metric>,
}

/// A refresher run before each report, to read levels kept elsewhere (pool sizes, memory).
type Collector = Box<dyn Fn() + Send + Sync>;

/// The metrics of one service in one process.
pub struct Registry {
    service: String,
    instance: String,
    families: RwLock<BTreeMap<&'static str, Family>>,
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("service", &self.service)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// The registry of the service whose work the current task is doing.
    static CURRENT: Arc<Registry>;
}

impl Registry {
    /// Creates a registry for `service`, reporting as this process's instance, holding the
    /// build it runs (`swarm_build_info`), with the process's memory and CPU time collected
    /// before every report.
    pub fn new(service: &str) -> Arc<Self> {
        let registry = Arc::new(Self {
            service: service.to_owned(),
            instance: instance_id(),
            families: RwLock::default(),
            collectors: Mutex::default(),
        });
        registry
            .gauge(
                &names::BUILD_INFO,
                &[("version", env!("CARGO_PKG_VERSION"))],
            )
            .set(1.0);
        let memory = registry.gauge(&names::PROCESS_RESIDENT_MEMORY, &[]);
        let cpu = registry.counter(&names::PROCESS_CPU_SECONDS, &[]);
        registry.on_collect(move || {
            if let Some(bytes) = crate::process::resident_bytes() {
                #[allow(clippy::cast_precision_loss)]
                memory.set(bytes as f64);
            }
            if let Some(seconds) = crate::process::cpu_seconds() {
                cpu.set_total(seconds);
            }
        });
        registry
    }

    /// Returns the service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Returns the counter of `def` with `labels`, creating it at zero.
    pub fn counter(
        &self,
        def: &'static MetricDef,
        labels: &[(&'static str, &str)],
    ) -> Arc<Counter> {
        match self.metric(def, labels) {
            Metric::Counter(counter) => counter,
            _ => unreachable!("metric definitions fix the kind"),
        }
    }

    /// Returns the gauge of `def` with `labels`, creating it at zero.
    pub fn gauge(&self, def: &'static MetricDef, labels: &[(&'static str, &str)]) -> Arc<Gauge> {
        match self.metric(def, labels) {
            Metric::Gauge(gauge) => gauge,
            _ => unreachable!("metric definitions fix the kind"),
        }
    }

    /// Returns the histogram of `def` with `labels`, creating it empty.
    pub fn histogram(
        &self,
        def: &'static MetricDef,
        labels: &[(&'static str, &str)],
    ) -> Arc<Histogram> {
        match self.metric(def, labels) {
            Metric::Histogram(histogram) => histogram,
            _ => unreachable!("metric definitions fix the kind"),
        }
    }

    fn metric(&self, def: &'static MetricDef, labels: &[(&'static str, &str)]) -> Metric {
        let mut key: Labels = labels
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        key.sort_unstable();
        if let Some(metric) = read(&self.families)
            .get(def.name)
            .and_then(|family| family.series.get(&key))
        {
            return metric.clone();
        }
        let mut families = self
            .families
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = families.entry(def.name).or_insert_with(|| Family {
            def,
            series: HashMap::new(),
        });
        family
            .series
            .entry(key)
            .or_insert_with(|| match def.kind {
                Kind::Counter => Metric::Counter(Arc::default()),
                Kind::Gauge => Metric::Gauge(Arc::default()),
                Kind::Histogram => Metric::Histogram(Arc::default()),
            })
            .clone()
    }

    /// Runs `collect` before every report, to refresh levels that live elsewhere.
    pub fn on_collect(&self, collect: impl Fn() + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(collect));
    }

    /// Returns the report of every metric's current value, after running the collectors.
    pub fn report(&self) -> pb::RecordRequest {
        for collect in self
            .collectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            collect();
        }
        let families = read(&self.families)
            .values()
            .map(|family| pb::MetricFamily {
                name: family.def.name.to_owned(),
                help: family.def.help.to_owned(),
                kind: match family.def.kind {
                    Kind::Counter => pb::MetricKind::Counter,
                    Kind::Gauge => pb::MetricKind::Gauge,
                    Kind::Histogram => pb::MetricKind::Histogram,
                }
                .into(),
                bounds: if family.def.kind == Kind::Histogram {
                    LATENCY_BOUNDS.to_vec()
                } else {
                    Vec::new()
                },
                series: family
                    .series
                    .iter()
                    .map(|(labels, metric)| {
                        let labels = labels
                            .iter()
                            .map(|(name, value)| ((*name).to_owned(), value.clone()))
                            .collect();
                        match metric {
                            Metric::Counter(counter) => pb::Series {
                                labels,
                                value: counter.get(),
                                ..pb::Series::default()
                            },
                            Metric::Gauge(gauge) => pb::Series {
                                labels,
                                value: gauge.get(),
                                ..pb::Series::default()
                            },
                            Metric::Histogram(histogram) => histogram.series(labels),
                        }
                    })
                    .collect(),
            })
            .collect();
        pb::RecordRequest {
            service: self.service.clone(),
            instance: self.instance.clone(),
            families,
        }
    }

    /// Runs `work` as work of this registry's service: what it measures without a registry of
    /// its own at hand (database queries) is counted here.
    pub fn scope<F: Future>(self: &Arc<Self>, work: F) -> impl Future<Output = F::Output> + use<F> {
        CURRENT.scope(Arc::clone(self), work)
    }

    /// Runs background `work` (a sweep, a periodic count) as work of this registry's service,
    /// so that its database statements are counted here on every backend.
    pub fn scope_background<F: Future>(
        self: &Arc<Self>,
        work: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        let span = db::scope_span(self);
        CURRENT.scope(
            Arc::clone(self),
            tracing::Instrument::instrument(work, span),
        )
    }

    /// Returns the registry of the service whose work the current task is doing, if any.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Names this process among the replicas: the host (a pod's name on Kubernetes) and the pid.
pub(crate) fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Rounds a figure to two decimals, as answers show figures to people.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family<'a>(report: &'a pb::RecordRequest, name: &str) -> &'a pb::MetricFamily {
        report
            .families
            .iter()
            .find(|family| family.name == name)
            .expect("family reported")
    }

    #[test]
    fn every_registry_reports_the_build_it_runs() {
        let report = Registry::new("test").report();
        let series = &family(&report, names::BUILD_INFO.name).series;
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["version"], env!("CARGO_PKG_VERSION"));
        assert!((series[0].value - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn histograms_count_into_inclusive_upper_bounds() {
        let registry = Registry::new("test");
        let histogram = registry.histogram(&names::REQUEST_DURATION, &[("route", "r")]);
        histogram.observe(Duration::from_micros(100)); // exactly the first bound
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60)); // past every bound
        let report = registry.report();
        let series = &family(&report, names::REQUEST_DURATION.name).series[0];
        assert_eq!(series.bucket_counts.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(series.bucket_counts[0], 1);
        let le_5ms = LATENCY_BOUNDS.iter().position(|b| *b == 0.005).unwrap();
        assert_eq!(series.bucket_counts[le_5ms], 1);
        assert_eq!(series.bucket_counts[LATENCY_BOUNDS.len()], 1);
        assert!((series.sum - 60.0031).abs() < 1e-9);
    }

    #[test]
    fn series_are_told_apart_by_labels_in_any_order() {
        let registry = Registry::new("test");
        registry
            .counter(&names::DB_SLOW_QUERIES, &[("a", "1"), ("b", "2")])
            .add(2.0);
        registry
            .counter(&names::DB_SLOW_QUERIES, &[("b", "2"), ("a", "1")])
            .add(3.0);
        registry
            .counter(&names::DB_SLOW_QUERIES, &[("a", "9")])
            .add(1.0);
        let report = registry.report();
        let mut values: Vec<f64> = family(&report, names::DB_SLOW_QUERIES.name)
            .series
            .iter()
            .map(|series| series.value)
            .collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, [1.0, 5.0]);
        assert_eq!(report.service, "test");
    }

    #[test]
    fn reports_carry_the_process_figures() {
        let report = Registry::new("test").report();
        let memory = family(&report, names::PROCESS_RESIDENT_MEMORY.name);
        assert!(memory.series[0].value > 0.0);
        assert_eq!(memory.kind, i32::from(pb::MetricKind::Gauge));
    }
}

//! The aggregator: keeps the latest report of every reporting process, and turns the growth of
//! each cumulative counter and histogram between two reports into increments filed in time
//! slots, so that any figure over the last window is the sum of the slots it covers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use swarm_kit::metrics::LATENCY_BOUNDS;
use swarm_proto::metrics::v1 as pb;

/// How many slots a window is cut into.
const SLOTS_PER_WINDOW: u32 = 12;

/// A metric name with its labels, sorted.
pub type SeriesKey = (String, Vec<(String, String)>);

/// A report that cannot be aggregated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The service or instance name is missing.
    #[error("service and instance must be set")]
    Unnamed,
    /// A family has no known kind.
    #[error("metric {0} has no kind")]
    NoKind(String),
    /// A histogram does not use Swarm's latency buckets.
    #[error("histogram {0} must use swarm's latency bucket bounds with one count per bucket")]
    Buckets(String),
}

/// The growth of one series over some time.
#[derive(Debug, Clone, PartialEq)]
pub enum Increment {
    /// A counter's growth.
    Count(f64),
    /// A histogram's growth: observations per bucket and their sum.
    Histogram(Vec<u64>, f64),
}

impl Increment {
    fn add(&mut self, other: &Self) {
        match (self, other) {
            (Self::Count(total), Self::Count(more)) => *total += more,
            (Self::Histogram(buckets, sum), Self::Histogram(more, more_sum)) => {
                for (bucket, more) in buckets.iter_mut().zip(more) {
                    *bucket += more;
                }
                *sum += more_sum;
            }
            _ => {}
        }
    }
}

/// What one process last reported.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its service.
    pub service: String,
    /// Its instance id.
    pub instance: String,
    /// When its last report arrived.
    pub last_seen: SystemTime,
    /// The families of its last report.
    pub families: Vec<pb::MetricFamily>,
    /// Its CPU time total at each report within the window, oldest first.
    pub cpu_history: VecDeque<(Instant, f64)>,
    seen_at: Instant,
    totals: HashMap<SeriesKey, Increment>,
}

#[derive(Debug)]
struct Slot {
    start: Instant,
    increments: HashMap<(String, SeriesKey), Increment>,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<(String, String), Instance>,
    slots: VecDeque<Slot>,
}

/// Every process's latest report and the window of increments.
#[derive(Debug)]
pub struct Aggregator {
    window: Duration,
    slot: Duration,
    state: Mutex<State>,
}

/// A view of the aggregate at one moment, for figures and exposition.
#[derive(Debug)]
pub struct Snapshot {
    /// Processes seen within the window.
    pub instances: Vec<Instance>,
    /// Increments within the window, summed per service and series.
    pub increments: HashMap<(String, SeriesKey), Increment>,
    /// The window covered.
    pub window: Duration,
}

impl Aggregator {
    /// Aggregates over a sliding `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slot: (window / SLOTS_PER_WINDOW).max(Duration::from_millis(50)),
            state: Mutex::default(),
        }
    }

    /// Returns the window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Returns how often the window moves on: the length of one slot.
    pub fn slot(&self) -> Duration {
        self.slot
    }

    /// Takes in one process's report; returns how many series it held.
    pub fn record(&self, report: pb::RecordRequest) -> Result<usize, RecordError> {
        if report.service.is_empty() || report.instance.is_empty() {
            return Err(RecordError::Unnamed);
        }
        let mut totals = HashMap::new();
        let mut cpu_total = None;
        for family in &report.families {
            let kind = pb::MetricKind::try_from(family.kind)
                .ok()
                .filter(|kind| *kind != pb::MetricKind::Unspecified)
                .ok_or_else(|| RecordError::NoKind(family.name.clone()))?;
            for series in &family.series {
                let key = series_key(&family.name, &series.labels);
                match kind {
                    pb::MetricKind::Counter => {
                        if family.name == swarm_kit::metrics::names::PROCESS_CPU_SECONDS.name {
                            cpu_total = Some(series.value);
                        }
                        totals.insert(key, Increment::Count(series.value));
                    }
                    pb::MetricKind::Histogram => {
                        if family.bounds != LATENCY_BOUNDS
                            || series.bucket_counts.len() != LATENCY_BOUNDS.len() + 1
                        {
                            return Err(RecordError::Buckets(family.name.clone()));
                        }
                        totals.insert(
                            key,
                            Increment::Histogram(series.bucket_counts.clone(), series.sum),
                        );
                    }
                    _ => {}
                }
            }
        }
        let series = report
            .families
            .iter()
            .map(|family| family.series.len())
            .sum();
        let (mut state, now) = self.rolled();
        let id = (report.service.clone(), report.instance.clone());
        let previous = state.instances.remove(&id);
        let increments: Vec<_> = totals
            .iter()
            .filter_map(|(key, total)| {
                let before = previous
                    .as_ref()
                    .and_then(|instance| instance.totals.get(key));
                growth(before, total).map(|increment| (key.clone(), increment))
            })
            .collect();
        let slot = state.slots.back_mut().expect("roll leaves a current slot");
        for (key, increment) in increments {
            slot.increments
                .entry((report.service.clone(), key))
                .and_modify(|sum| sum.add(&increment))
                .or_insert(increment);
        }
        let mut cpu_history = previous
            .map(|instance| instance.cpu_history)
            .unwrap_or_default();
        if let Some(total) = cpu_total {
            cpu_history.push_back((now, total));
        }
        while cpu_history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
        {
            cpu_history.pop_front();
        }
        state.instances.insert(
            id,
            Instance {
                service: report.service,
                instance: report.instance,
                last_seen: SystemTime::now(),
                families: report.families,
                cpu_history,
                seen_at: now,
                totals,
            },
        );
        Ok(series)
    }

    /// Returns the processes seen within the window and the increments within it.
    pub fn snapshot(&self) -> Snapshot {
        let (state, _) = self.rolled();
        let mut increments: HashMap<(String, SeriesKey), Increment> = HashMap::new();
        for slot in &state.slots {
            for (key, increment) in &slot.increments {
                increments
                    .entry(key.clone())
                    .and_modify(|sum| sum.add(increment))
                    .or_insert_with(|| increment.clone());
            }
        }
        Snapshot {
            instances: state.instances.values().cloned().collect(),
            increments,
            window: self.window,
        }
    }

    /// Locks the state, rolled forward to now (see [`Aggregator::roll`]), and says when now is.
    fn rolled(&self) -> (std::sync::MutexGuard<'_, State>, Instant) {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.roll(&mut state, now);
        (state, now)
    }

    /// Opens a new slot when the current one is full, and forgets slots and processes that
    /// fell out of the window.
    fn roll(&self, state: &mut State, now: Instant) {
        if state
            .slots
            .back()
            .is_none_or(|slot| now.duration_since(slot.start) >= self.slot)
        {
            state.slots.push_back(Slot {
                start: now,
                increments: HashMap::new(),
            });
        }
        while state
            .slots
            .front()
            .is_some_and(|slot| now.duration_since(slot.start) > self.window)
        {
            state.slots.pop_front();
        }
        state
            .instances
            .retain(|_, instance| now.duration_since(instance.seen_at) <= self.window);
    }
}

/// Sorts a series's labels into its key.
fn series_key(name: &str, labels: &HashMap<String, String>) -> SeriesKey {
    let mut labels: Vec<_> = labels
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    labels.sort_unstable();
    (name.to_owned(), labels)
}

/// The growth from `before` to `now`; all of `now` when there is no `before` (a new process)
/// or when `now` is smaller (the process restarted and its totals with it).
fn growth(before: Option<&Increment>, now: &Increment) -> Option<Increment> {
    let grown = match (before, now) {
        (Some(Increment::Count(before)), Increment::Count(now)) if now >= before => {
            Increment::Count(now - before)
        }
        (Some(Increment::Histogram(before, sum_before)), Increment::Histogram(now, sum))
            if now.iter().zip(before).all(|(now, before)| now >= before) =>
        {
            Increment::Histogram(
                now.iter()
                    .zip(before)
                    .map(|(now, before)| now - before)
                    .collect(),
                (sum - sum_before).max(0.0),
            )
        }
        _ => now.clone(),
    };
    let empty = match &grown {
        Increment::Count(count) => *count == 0.0,
        Increment::Histogram(buckets, _) => buckets.iter().all(|count| *count == 0),
    };
    (!empty).then_some(grown)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records `report`, which must be accepted.
    pub(crate) fn take(aggregator: &Aggregator, report: pb::RecordRequest) {
        aggregator.record(report).expect("the report is accepted");
    }

    /// A report of one histogram series and one counter.
    pub(crate) fn report(
        service: &str,
        instance: &str,
        route: &str,
        buckets: Vec<u64>,
        hits: f64,
    ) -> pb::RecordRequest {
        let labels = HashMap::from([
            ("route".to_owned(), route.to_owned()),
            ("status".to_owned(), "200".to_owned()),
            ("outcome".to_owned(), "ok".to_owned()),
        ]);
        pb::RecordRequest {
            service: service.into(),
            instance: instance.into(),
            families: vec![
                pb::MetricFamily {
                    name: "swarm_request_duration_seconds".into(),
                    help: "h".into(),
                    kind: pb::MetricKind::Histogram.into(),
                    bounds: LATENCY_BOUNDS.to_vec(),
                    series: vec![pb::Series {
                        labels,
                        sum: 0.5,
                        bucket_counts: buckets,
                        ..pb::Series::default()
                    }],
                },
                pb::MetricFamily {
                    name: "swarm_cache_hits_total".into(),
                    help: "h".into(),
                    kind: pb::MetricKind::Counter.into(),
                    bounds: vec![],
                    series: vec![pb::Series {
                        value: hits,
                        ..pb::Series::default()
                    }],
                },
            ],
        }
    }

    pub(crate) fn buckets(first: u64) -> Vec<u64> {
        let mut buckets = vec![0; LATENCY_BOUNDS.len() + 1];
        buckets[0] = first;
        buckets
    }

    fn hits(snapshot: &Snapshot) -> f64 {
        match snapshot.increments.get(&(
            "cache".to_owned(),
            ("swarm_cache_hits_total".to_owned(), vec![]),
        )) {
            Some(Increment::Count(count)) => *count,
            _ => 0.0,
        }
    }

    #[test]
    fn increments_are_the_growth_between_reports() {
        let aggregator = Aggregator::new(Duration::from_secs(60));
        take(&aggregator, report("cache", "a", "r", buckets(1), 10.0));
        take(&aggregator, report("cache", "a", "r", buckets(3), 25.0));
        assert_eq!(hits(&aggregator.snapshot()), 25.0);
        // A restart starts the totals again from zero: the new total is all growth.
        take(&aggregator, report("cache", "a", "r", buckets(0), 4.0));
        assert_eq!(hits(&aggregator.snapshot()), 29.0);
    }

    #[test]
    fn replicas_add_up() {
        let aggregator = Aggregator::new(Duration::from_secs(60));
        take(&aggregator, report("cache", "a", "r", buckets(1), 10.0));
        take(&aggregator, report("cache", "b", "r", buckets(1), 5.0));
        let snapshot = aggregator.snapshot();
        assert_eq!(hits(&snapshot), 15.0);
        assert_eq!(snapshot.instances.len(), 2);
    }

    #[test]
    fn increments_and_processes_leave_the_window() {
        let aggregator = Aggregator::new(Duration::from_millis(200));
        take(&aggregator, report("cache", "a", "r", buckets(1), 10.0));
        std::thread::sleep(Duration::from_millis(300));
        let snapshot = aggregator.snapshot();
        assert_eq!(hits(&snapshot), 0.0);
        assert!(snapshot.instances.is_empty());
    }

    #[test]
    fn bad_reports_are_refused_whole() {
        let aggregator = Aggregator::new(Duration::from_secs(60));
        assert_eq!(
            aggregator.record(report("", "a", "r", buckets(1), 1.0)),
            Err(RecordError::Unnamed)
        );
        let mut wrong = report("cache", "a", "r", buckets(1), 1.0);
        wrong.families[0].bounds.pop();
        assert!(matches!(
            aggregator.record(wrong),
            Err(RecordError::Buckets(_))
        ));
        let mut kindless = report("cache", "a", "r", buckets(1), 1.0);
        kindless.families[1].kind = 0;
        assert!(matches!(
            aggregator.record(kindless),
            Err(RecordError::NoKind(_))
        ));
        assert!(aggregator.snapshot().instances.is_empty());
    }
}

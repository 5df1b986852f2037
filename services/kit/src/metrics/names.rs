//! The metrics Swarm processes keep, by name: what each measures and how it behaves. The
//! metrics service builds its summary and evaluates its targets from these names.

use super::Kind;

/// A metric's name, its one-line help and its kind.
#[derive(Debug)]
pub struct MetricDef {
    /// The Prometheus name.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// How its values behave.
    pub kind: Kind,
}

const fn def(name: &'static str, help: &'static str, kind: Kind) -> MetricDef {
    MetricDef { name, help, kind }
}

/// Handled requests by `route`, `status` and `outcome` (`ok` or `error`).
pub const REQUEST_DURATION: MetricDef = def(
    "swarm_request_duration_seconds",
    "Time to answer a request, by route or gRPC method, status and outcome.",
    Kind::Histogram,
);
/// Database statements.
pub const DB_QUERY_DURATION: MetricDef = def(
    "swarm_db_query_duration_seconds",
    "Time to run a database statement.",
    Kind::Histogram,
);
/// Database statements slower than the slow-query threshold.
pub const DB_SLOW_QUERIES: MetricDef = def(
    "swarm_db_slow_queries_total",
    "Database statements slower than the slow-query threshold.",
    Kind::Counter,
);
/// Open pooled connections.
pub const DB_POOL_SIZE: MetricDef = def(
    "swarm_db_pool_connections",
    "Database connections open in the pool.",
    Kind::Gauge,
);
/// Pooled connections in use.
pub const DB_POOL_IN_USE: MetricDef = def(
    "swarm_db_pool_in_use_connections",
    "Database connections checked out of the pool.",
    Kind::Gauge,
);
/// Pooled connections idle.
pub const DB_POOL_IDLE: MetricDef = def(
    "swarm_db_pool_idle_connections",
    "Database connections idle in the pool.",
    Kind::Gauge,
);
/// Cache lookups that found their key.
pub const CACHE_HITS: MetricDef = def(
    "swarm_cache_hits_total",
    "Cache lookups that found their key.",
    Kind::Counter,
);
/// Cache lookups that did not.
pub const CACHE_MISSES: MetricDef = def(
    "swarm_cache_misses_total",
    "Cache lookups that did not find their key.",
    Kind::Counter,
);
/// Cache entries evicted for room.
pub const CACHE_EVICTIONS: MetricDef = def(
    "swarm_cache_evictions_total",
    "Cache entries evicted to stay within the size bound.",
    Kind::Counter,
);
/// Cache entries stored.
pub const CACHE_ENTRIES: MetricDef = def(
    "swarm_cache_entries",
    "Entries held by the cache.",
    Kind::Gauge,
);
/// Tasks by `status`.
pub const TASKS: MetricDef = def("swarm_tasks", "Tasks in the queue by status.", Kind::Gauge);
/// How long claimed tasks waited in the queue.
pub const TASK_QUEUE_WAIT: MetricDef = def(
    "swarm_task_queue_wait_seconds",
    "Time from a task becoming claimable to its claim.",
    Kind::Histogram,
);
/// Which build of Swarm a process runs: always 1, labelled with the `version`.
pub const BUILD_INFO: MetricDef = def(
    "swarm_build_info",
    "The Swarm version a process runs (always 1).",
    Kind::Gauge,
);
/// Resident memory.
pub const PROCESS_RESIDENT_MEMORY: MetricDef = def(
    "swarm_process_resident_memory_bytes",
    "Resident memory of the process.",
    Kind::Gauge,
);
/// CPU time used.
pub const PROCESS_CPU_SECONDS: MetricDef = def(
    "swarm_process_cpu_seconds_total",
    "CPU time the process has used, user and system.",
    Kind::Counter,
);

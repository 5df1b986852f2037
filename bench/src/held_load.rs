//! The held-load scenario: many task event streams and waiting claims held open at once (what a
//! dashboard full of watchers and an idle fleet cost), while tasks are created at a steady rate.
//! It reports create latency and the tasks service's memory, against the bounds the isolation
//! work set: under 128 MB resident and a create p99 under 20 ms. Creates leave on a schedule
//! (open loop), and each one's latency counts from its scheduled time, so a stall that delays
//! later sends shows in their latency rather than hiding.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::json;
use tokio::sync::watch;

use crate::processes::{self, Api, Layout, Stack};

/// The capability the created tasks need and no agent has, so waiting claims stay waiting.
const NOBODY_CAN: &str = "bench-nobody";
/// How many setup requests run at once.
const SETUP_CONCURRENCY: usize = 32;
/// How long each claim waits for work, in seconds (the most a claim may).
const CLAIM_WAIT_SECONDS: u64 = 60;
/// How long after its last heartbeat an agent sends another before claiming again.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How long the cost of holding alone is measured.
const HOLD_MEASURE: Duration = Duration::from_secs(3);
/// The bounds the scenario checks.
const RSS_BOUND_BYTES: u64 = 128 * 1024 * 1024;
const CREATE_P99_BOUND: Duration = Duration::from_millis(20);

/// What to hold and how long to load.
#[derive(Debug, Clone)]
pub struct Options {
    pub swarm: PathBuf,
    pub database_url: String,
    pub streams: usize,
    pub claims: usize,
    pub duration: Duration,
    /// Creates per second.
    pub rate: f64,
}

/// Creates a task no agent can claim and returns its id.
async fn create_task(api: &Api, title: String) -> anyhow::Result<String> {
    let task = api
        .post(
            "/api/tasks",
            json!({"title": title, "required_capabilities": [NOBODY_CAN]}),
        )
        .await?;
    Ok(task["id"].as_str().context("a task id")?.to_owned())
}

/// Runs the scenario and prints its figures.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let share = (options.streams + options.claims + 100).to_string();
    let stack = Stack::start(
        &options.swarm,
        Layout::Separate,
        &options.database_url,
        &[("SWARM_MAX_STREAMS_PER_KEY", share)],
    )
    .await?;
    let tasks_pid = stack.pid("tasks").context("the tasks service runs")?;
    let api = Api::new(&stack.base, &stack.admin_key);
    println!(
        "held load on {}: {} event streams, {} waiting claims, {} creates/s for {:?}",
        options.database_url, options.streams, options.claims, options.rate, options.duration
    );
    let (idle_rss, _) = processes::memory(tasks_pid)?;
    // The same creates with nothing held first: what the machine and database give anyway.
    let unloaded = create_at(&api, options.rate, options.duration).await?;
    let (stop, stopped) = watch::channel(false);

    let streams_open = hold_streams(&api, options.streams, stopped.clone()).await?;
    let claims_answered = hold_claims(&api, options.claims, stopped.clone()).await?;
    // Let every claim reach the queue and wait there, then see what holding costs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu = processes::cpu_time(tasks_pid)?;
    tokio::time::sleep(HOLD_MEASURE).await;
    let holding_cpu = processes::cpu_time(tasks_pid)? - idle_cpu;
    let (held_rss, _) = processes::memory(tasks_pid)?;

    let sampler = tokio::spawn(sample_memory(tasks_pid, stopped.clone()));
    let latencies = create_at(&api, options.rate, options.duration).await?;
    let open_at_end = streams_open.load(Ordering::SeqCst);
    let answered_early = claims_answered.load(Ordering::SeqCst);
    stop.send_replace(true);
    let peak_rss = sampler.await??;

    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    print_latencies("creates, nothing held", &unloaded);
    print_latencies("creates while holding", &latencies);
    println!(
        "  tasks service resident memory: {:.1} MB idle, {:.1} MB holding, {:.1} MB peak under creates",
        mb(idle_rss),
        mb(held_rss),
        mb(peak_rss),
    );
    println!(
        "  tasks service CPU while holding, before creates: {:.1} % of a core",
        holding_cpu.as_secs_f64() / HOLD_MEASURE.as_secs_f64() * 100.0
    );
    println!(
        "  still open at the end: {open_at_end} of {} streams; claims answered before their wait ended: {answered_early}",
        options.streams
    );
    let verdict = |ok: bool| if ok { "holds" } else { "MISSED" };
    println!(
        "  bound: tasks service under 128 MB: {}; create p99 under 20 ms: {}",
        verdict(peak_rss < RSS_BOUND_BYTES),
        verdict(percentile(&latencies, 0.99) < CREATE_P99_BOUND),
    );
    if open_at_end < options.streams {
        bail!(
            "{} event streams ended early",
            options.streams - open_at_end
        );
    }
    Ok(())
}

/// Prints the count and percentiles of sorted `latencies`.
fn print_latencies(label: &str, latencies: &[Duration]) {
    let p = |q: f64| percentile(latencies, q).as_secs_f64() * 1000.0;
    println!(
        "  {label}: {}, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        p(0.50),
        p(0.95),
        p(0.99),
        p(1.0),
    );
}

/// Creates `count` tasks and opens an event stream on each, read until `stopped`; returns the
/// number of streams still open.
async fn hold_streams(
    api: &Api,
    count: usize,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Arc<AtomicUsize>> {
    let open = Arc::new(AtomicUsize::new(0));
    let opened: Vec<anyhow::Result<()>> = stream::iter(0..count)
        .map(|i| {
            let (api, open, mut stopped) = (api.clone(), open.clone(), stopped.clone());
            async move {
                let id = create_task(&api, format!("watched {i}")).await?;
                let mut events = api
                    .get(&format!("/api/tasks/{id}/events"))
                    .send()
                    .await?
                    .error_for_status()?;
                // The first event is the task as it is: the watch is in place.
                events.chunk().await?.context("a first event")?;
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => return,
                            chunk = events.chunk() => if !matches!(chunk, Ok(Some(_))) {
                                open.fetch_sub(1, Ordering::SeqCst);
                                return;
                            },
                        }
                    }
                });
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    opened.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(open)
}

/// Registers `count` agents and keeps one claim of each waiting (heartbeating between claims)
/// until `stopped`; returns how many claims were answered before their wait ended.
async fn hold_claims(
    api: &Api,
    count: usize,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Arc<AtomicUsize>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let agents: Vec<anyhow::Result<String>> = stream::iter(0..count)
        .map(|i| {
            let (api, run) = (api.clone(), run.clone());
            async move {
                let agent = api
                    .post(
                        "/api/agents",
                        json!({"name": format!("idle-{run}-{i}"), "capabilities": ["bench-idle"]}),
                    )
                    .await?;
                Ok(agent["id"].as_str().context("an agent id")?.to_owned())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let answered = Arc::new(AtomicUsize::new(0));
    for agent in agents {
        let (agent, api, answered, mut stopped) =
            (agent?, api.clone(), answered.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut heartbeat = Instant::now();
            loop {
                if heartbeat.elapsed() > HEARTBEAT_EVERY {
                    let _ = api
                        .post(&format!("/api/agents/{agent}/heartbeat"), json!({}))
                        .await;
                    heartbeat = Instant::now();
                }
                let started = Instant::now();
                let claim = json!({"agent_id": agent, "wait_seconds": CLAIM_WAIT_SECONDS});
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = api.post("/api/tasks/claim", claim) => {
                        if started.elapsed() < Duration::from_secs(CLAIM_WAIT_SECONDS) - Duration::from_millis(500) {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
    }
    Ok(answered)
}

/// Creates tasks at `rate` per second for `duration`, each on its own schedule; returns each
/// create's latency from its scheduled time.
async fn create_at(api: &Api, rate: f64, duration: Duration) -> anyhow::Result<Vec<Duration>> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = tokio::time::Instant::now() + duration;
    let mut creates = tokio::task::JoinSet::new();
    loop {
        let scheduled = ticks.tick().await;
        if scheduled >= deadline {
            break;
        }
        let api = api.clone();
        creates.spawn(async move {
            create_task(&api, "load".to_owned()).await?;
            anyhow::Ok(scheduled.elapsed())
        });
    }
    let mut latencies = Vec::new();
    while let Some(create) = creates.join_next().await {
        latencies.push(create??);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Samples the process's resident memory every 100 ms until `stopped`; returns the peak.
async fn sample_memory(pid: u32, mut stopped: watch::Receiver<bool>) -> anyhow::Result<u64> {
    let mut peak = 0;
    loop {
        peak = peak.max(processes::memory(pid)?.0);
        tokio::select! {
            _ = stopped.changed() => return Ok(peak),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Returns the `q` quantile of sorted `latencies` (zero when there are none).
fn percentile(latencies: &[Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[rank.min(latencies.len() - 1)]
}

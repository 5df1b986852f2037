//! The scaling scenario: how the cost of the everyday calls grows with the backlog. `swarm up`
//! gets a growing backlog of queued tasks that need a capability (`gpu`) no agent of the run
//! has, and at each size the same calls are timed one at a time, as one client makes them:
//! a create, a claim by an agent of another capability that takes a task, one that finds
//! nothing to take (the claim that used to walk the whole backlog), and a first page of the
//! task list. A flat row from the smallest size to the largest is the goal. Then the same
//! stack gets a growing fleet of agents that all heartbeat, round after round: its memory should
//! grow a little with each agent registered and not at all from one round to the next.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use crate::api::percentile_ms;
use crate::processes::{Api, Layout, Stack, memory, mib};

/// Tasks in each backlog-building request.
const BATCH: u64 = 1000;
/// Backlog-building requests in flight at once.
const SEED_CONCURRENCY: usize = 4;

/// What the scenario runs against.
pub struct Options {
    /// The `swarm` binary whose `swarm up` is measured.
    pub swarm: PathBuf,
    /// The database it uses (fresh: the backlog is counted from zero).
    pub database_url: String,
    /// The backlog sizes measured, smallest first.
    pub sizes: Vec<u64>,
    /// Calls of each kind timed at each size.
    pub samples: usize,
    /// The fleet sizes measured, smallest first (none: the fleet part is skipped).
    pub fleets: Vec<u64>,
}

/// Agents registered, or heartbeats sent, at once while a fleet is measured.
const FLEET_CONCURRENCY: usize = 16;
/// Heartbeat rounds, each from every agent of the fleet, at each fleet size.
const HEARTBEAT_ROUNDS: usize = 3;

/// The figures at one backlog size.
struct Row {
    backlog: u64,
    create: Latency,
    claim_taking: Latency,
    claim_empty: Latency,
    list: Latency,
    rss_mib: f64,
}

/// Median and 99th percentile of one kind of call, in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile_ms(&samples, 0.50),
            p99: percentile_ms(&samples, 0.99),
        }
    }
}

/// Runs the scenario and prints one row per backlog size, then each figure's largest over
/// smallest ratio.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let stack = Stack::start(&options.swarm, Layout::Embedded, &options.database_url, &[])
        .await
        .context("starting swarm up")?;
    let api = Api::new(&stack.base, &stack.admin_key);
    let agent = api
        .post(
            "/api/agents",
            json!({"name": "scale-cpu", "capabilities": ["cpu"], "max_concurrency": 1000}),
        )
        .await?;
    let agent_id = agent["id"].as_str().context("an agent id")?.to_owned();

    println!(
        "{:>9}  {:>17}  {:>17}  {:>17}  {:>17}  {:>8}",
        "backlog", "create p50/p99", "claim p50/p99", "empty claim", "list p50/p99", "RSS MiB"
    );
    let mut rows = Vec::new();
    let mut backlog = 0;
    for &size in &options.sizes {
        backlog += seed(&api, size.saturating_sub(backlog)).await?;
        let row = measure(&api, &agent_id, backlog, options.samples, &stack).await?;
        println!(
            "{:>9}  {:>7.2} / {:>7.2}  {:>7.2} / {:>7.2}  {:>7.2} / {:>7.2}  {:>7.2} / {:>7.2}  {:>8.1}",
            row.backlog,
            row.create.p50,
            row.create.p99,
            row.claim_taking.p50,
            row.claim_taking.p99,
            row.claim_empty.p50,
            row.claim_empty.p99,
            row.list.p50,
            row.list.p99,
            row.rss_mib,
        );
        rows.push(row);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let ratio = |of: fn(&Row) -> f64| of(last) / of(first).max(f64::EPSILON);
        println!(
            "p99 growth from {} to {}: create {:.2}x, claim {:.2}x, empty claim {:.2}x, list {:.2}x",
            first.backlog,
            last.backlog,
            ratio(|row| row.create.p99),
            ratio(|row| row.claim_taking.p99),
            ratio(|row| row.claim_empty.p99),
            ratio(|row| row.list.p99),
        );
    }
    if !options.fleets.is_empty() {
        fleet(&api, &stack, &options.fleets).await?;
    }
    Ok(())
}

/// Grows a fleet of agents to each of `sizes` and has all of them heartbeat
/// [`HEARTBEAT_ROUNDS`] times, printing heartbeat latency and `swarm up`'s memory after
/// registering and after each round.
async fn fleet(api: &Api, stack: &Stack, sizes: &[u64]) -> anyhow::Result<()> {
    println!(
        "\n{:>9}  {:>17}  {:>13}  RSS MiB after each heartbeat round",
        "agents", "heartbeat p50/p99", "RSS MiB"
    );
    let before = rss_mib(stack)?;
    let mut ids: Vec<String> = Vec::new();
    for &size in sizes {
        let names: Vec<String> = (ids.len() as u64..size)
            .map(|n| format!("fleet-{n}"))
            .collect();
        let registered: Vec<anyhow::Result<String>> = stream::iter(names)
            .map(|name| async move {
                let agent = api
                    .post(
                        "/api/agents",
                        json!({"name": name, "capabilities": ["fleet"]}),
                    )
                    .await?;
                Ok(agent["id"].as_str().context("an agent id")?.to_owned())
            })
            .buffer_unordered(FLEET_CONCURRENCY)
            .collect()
            .await;
        for id in registered {
            ids.push(id?);
        }
        let registered_rss = rss_mib(stack)?;
        let mut beats = Vec::with_capacity(ids.len() * HEARTBEAT_ROUNDS);
        let mut rounds = Vec::with_capacity(HEARTBEAT_ROUNDS);
        for _ in 0..HEARTBEAT_ROUNDS {
            let timed: Vec<anyhow::Result<Duration>> = stream::iter(&ids)
                .map(|id| async move {
                    let started = Instant::now();
                    api.post(&format!("/api/agents/{id}/heartbeat"), json!({}))
                        .await?;
                    Ok(started.elapsed())
                })
                .buffer_unordered(FLEET_CONCURRENCY)
                .collect()
                .await;
            for elapsed in timed {
                beats.push(elapsed?);
            }
            rounds.push(rss_mib(stack)?);
        }
        let beat = Latency::of(beats);
        let rounds: Vec<String> = rounds.iter().map(|rss| format!("{rss:.1}")).collect();
        println!(
            "{:>9}  {:>7.2} / {:>7.2}  {:>13.1}  {}",
            ids.len(),
            beat.p50,
            beat.p99,
            registered_rss,
            rounds.join(" / "),
        );
    }
    println!(
        "memory with no agents {before:.1} MiB, with {} agents {:.1} MiB",
        ids.len(),
        rss_mib(stack)?
    );
    Ok(())
}

/// Adds `count` queued tasks that need `gpu` to the backlog, a batch a request; returns how
/// many were added.
async fn seed(api: &Api, count: u64) -> anyhow::Result<u64> {
    let batches = count.div_ceil(BATCH);
    let added: Vec<anyhow::Result<u64>> = stream::iter(0..batches)
        .map(|batch| async move {
            let size = BATCH.min(count - batch * BATCH);
            let tasks: Vec<Value> = (0..size)
                .map(|_| json!({"title": "backlog", "kind": "scale", "required_capabilities": ["gpu"]}))
                .collect();
            api.post("/api/tasks/batch", json!({ "tasks": tasks }))
                .await?;
            Ok(size)
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await;
    added.into_iter().sum()
}

/// Times `samples` calls of each kind, one at a time.
async fn measure(
    api: &Api,
    agent_id: &str,
    backlog: u64,
    samples: usize,
    stack: &Stack,
) -> anyhow::Result<Row> {
    // Building the backlog can outlast the agent's heartbeat TTL.
    api.post(&format!("/api/agents/{agent_id}/heartbeat"), json!({}))
        .await?;
    let mut creates = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        api.post(
            "/api/tasks",
            json!({"title": "measured", "kind": "scale", "required_capabilities": ["cpu"]}),
        )
        .await?;
        creates.push(started.elapsed());
    }
    let claim = json!({"agent_id": agent_id, "max_tasks": 1});
    let (mut taking, mut empty) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    // The first `samples` claims take the tasks just created; as many again find nothing.
    for _ in 0..2 * samples {
        let started = Instant::now();
        let claimed = api.post("/api/tasks/claim", claim.clone()).await?;
        let elapsed = started.elapsed();
        let tasks = claimed["tasks"].as_array().context("claimed tasks")?;
        match tasks.first() {
            Some(task) => {
                taking.push(elapsed);
                let id = task["id"].as_str().context("a task id")?;
                let done = json!({"agent_id": agent_id, "result": null});
                api.post(&format!("/api/tasks/{id}/complete"), done).await?;
            }
            None => empty.push(elapsed),
        }
    }
    if taking.len() != samples {
        bail!(
            "claims took {} of the {samples} tasks created for them",
            taking.len()
        );
    }
    let mut lists = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let response = api.get("/api/tasks?per_page=20").send().await?;
        if !response.status().is_success() {
            bail!("GET /api/tasks answered {}", response.status());
        }
        response.bytes().await?;
        lists.push(started.elapsed());
    }
    Ok(Row {
        backlog,
        create: Latency::of(creates),
        claim_taking: Latency::of(taking),
        claim_empty: Latency::of(empty),
        list: Latency::of(lists),
        rss_mib: rss_mib(stack)?,
    })
}

/// The resident memory of `stack`'s `swarm up`, in MiB.
fn rss_mib(stack: &Stack) -> anyhow::Result<f64> {
    let pid = stack.pid("swarm").context("swarm up's process")?;
    Ok(mib(memory(pid)?.0))
}

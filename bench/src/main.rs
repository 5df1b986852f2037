//! `swarm-bench`: the load generators and scenarios behind `make bench`, kept out of the
//! shipped `swarm` binary. `http` loads `swarm up` with wrk, as users' clients do; `api`,
//! `cache`, `overhead` (and `read`, which `overhead` runs) drive a stack started in this
//! process; `held-load`, `chaos` and `scale` are client processes of their own against the
//! `swarm` binary's roles started as separate processes.

mod api;
mod chaos;
mod flow;
mod held_load;
mod http;
mod overhead;
mod processes;
mod scale;

use api::BenchOptions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The allocator the shipped `swarm` binary uses, so the services this process hosts in the
/// `api`, `cache` and `overhead` scenarios cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures Swarm under load.
#[derive(Debug, Parser)]
#[command(name = "swarm-bench", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Loads `swarm up` with wrk (get task, create task) and prints throughput, latency, CPU
    /// per request and memory; with `--peer`, the same against a peer for the ratios.
    Http(HttpArgs),
    /// Measures create-task and get-task throughput and latency through the gateway, and the
    /// queue cycle with agents.
    Api(BenchArgs),
    /// Measures cache gets (memory, Redis, plain Redis) and the hit rate of agent config reads.
    Cache(BenchCacheArgs),
    /// Measures what span export, the metrics layer and the gateway's guards cost on get-task.
    Overhead(BenchOverheadArgs),
    /// Measures get-task once and prints the figures as JSON (run by `overhead`).
    #[command(hide = true)]
    Read(BenchReadArgs),
    /// Holds many open task event streams and waiting claims, then measures task creation
    /// and the tasks service's memory.
    HeldLoad(HeldLoadArgs),
    /// Measures batch creation throughput and the parent-completed to child-claimed latency.
    Flow(BenchFlowArgs),
    /// Kills `swarm up` with SIGKILL again and again under load, and checks that every
    /// acknowledged task completes, once, with its own result.
    Chaos(ChaosArgs),
    /// Times create, claim and list against a growing backlog of tasks no agent can take.
    Scale(ScaleArgs),
}

#[derive(Debug, clap::Args)]
struct ScaleArgs {
    /// The `swarm` binary whose `swarm up` is measured.
    #[arg(long, default_value = "target/release/swarm")]
    swarm: PathBuf,
    /// The database `swarm up` uses (a fresh one).
    #[arg(long)]
    database_url: String,
    /// Backlog sizes measured, smallest first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000"
    )]
    sizes: Vec<u64>,
    /// Calls of each kind timed at each size.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Fleet sizes measured after the backlog, smallest first (`--fleets` alone: none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1000,10000")]
    fleets: Vec<u64>,
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
    /// The `swarm` binary whose `swarm up` is killed.
    #[arg(long, default_value = "target/release/swarm")]
    swarm: PathBuf,
    /// The database `swarm up` uses.
    #[arg(long)]
    database_url: String,
    /// Seconds clients create tasks.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Times `swarm up` is killed meanwhile.
    #[arg(long, default_value_t = 3)]
    kills: u32,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// `swarm agent` processes.
    #[arg(long, default_value_t = 2)]
    agents: usize,
}

#[derive(Debug, clap::Args)]
struct BenchFlowArgs {
    /// The database to measure against.
    #[arg(long, default_value = "sqlite://data/bench.db")]
    database_url: String,
    /// Seconds to drive batch creation.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent batch clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Parent-to-child hand-offs measured.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// The `swarm` binary whose `swarm up` is loaded.
    #[arg(long, default_value = "target/release/swarm")]
    swarm: PathBuf,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// The database `swarm up` uses.
    #[arg(long)]
    database_url: String,
    /// Seconds each load is measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds each load runs, unmeasured, first.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Open connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A peer's base URL (the seed stack: `http://127.0.0.1:5006`) to load the same way.
    #[arg(long, env = "SEED_URL")]
    peer: Option<String>,
}

#[derive(Debug, clap::Args)]
struct HeldLoadArgs {
    /// The `swarm` binary whose roles are started.
    #[arg(long, default_value = "target/release/swarm")]
    swarm: PathBuf,
    /// The database every role uses.
    #[arg(long)]
    database_url: String,
    /// Task event streams held open.
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Claims held waiting, one per agent.
    #[arg(long, default_value_t = 1000)]
    claims: usize,
    /// Seconds tasks are created while the streams and claims are held.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Tasks created per second, on a schedule.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Spans of the stacks started here (and of `read` runs) go where OTEL_* says.
    let telemetry = match swarm_kit::telemetry::init("swarm-bench") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("swarm-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome: Outcome = match cli.scenario {
        Scenario::Http(args) => http::run(http::Options {
            swarm: args.swarm,
            wrk: args.wrk,
            database_url: args.database_url,
            duration: Duration::from_secs(args.seconds),
            warmup: Duration::from_secs(args.warmup),
            connections: args.connections,
            threads: args.threads,
            peer: args.peer.filter(|url| !url.is_empty()),
        })
        .await
        .map_err(Into::into),
        Scenario::Api(args) => run_bench(args).await,
        Scenario::Cache(args) => run_bench_cache(args).await,
        Scenario::Overhead(args) => run_bench_overhead(args).await,
        Scenario::Read(args) => run_bench_read(args).await,
        Scenario::Flow(args) => run_bench_flow(args).await,
        Scenario::Chaos(args) => chaos::run(chaos::Options {
            swarm: args.swarm,
            database_url: args.database_url,
            duration: Duration::from_secs(args.seconds),
            kills: args.kills,
            clients: args.clients,
            agents: args.agents,
        })
        .await
        .map_err(Into::into),
        Scenario::Scale(args) => scale::run(scale::Options {
            swarm: args.swarm,
            database_url: args.database_url,
            sizes: args.sizes,
            samples: args.samples,
            fleets: args.fleets,
        })
        .await
        .map_err(Into::into),
        Scenario::HeldLoad(args) => held_load::run(held_load::Options {
            swarm: args.swarm,
            database_url: args.database_url,
            streams: args.streams,
            claims: args.claims,
            duration: Duration::from_secs(args.seconds),
            rate: args.rate,
        })
        .await
        .map_err(Into::into),
    };
    // Export the spans still buffered; the exporter blocks, so not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swarm-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The database to measure against.
    #[arg(long, default_value = "sqlite://data/bench.db")]
    database_url: String,
    /// Seconds to drive each operation.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients (and task producers in the queue cycle).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Agents working the queue in the cycle benchmark.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Tasks each agent runs at once in the cycle benchmark (its `max_concurrency`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    agent_slots: u32,
    /// Tasks sent through the queue in the cycle benchmark.
    #[arg(long, default_value_t = 5000)]
    cycle_tasks: u64,
    /// Requests per second of the paced create and get runs, which measure latency below
    /// saturation (0: no paced runs).
    #[arg(long, default_value_t = 1000.0)]
    pace: f64,
}

#[derive(Debug, clap::Args)]
struct BenchCacheArgs {
    /// The Redis server to measure against.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Seconds to drive each operation.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Debug, clap::Args)]
struct BenchOverheadArgs {
    /// Seconds to drive each run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How many times each variant runs, in rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the runs keep their SQLite files.
    #[arg(long, default_value = "data")]
    data_dir: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
struct BenchReadArgs {
    /// The database.
    #[arg(long)]
    database_url: String,
    /// Seconds to create, then seconds to read.
    #[arg(long)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long)]
    concurrency: usize,
    /// Whether every process measures its requests and reports them (`true` or `false`).
    #[arg(long, action = clap::ArgAction::Set)]
    report_metrics: bool,
    /// Whether the gateway checks keys, limits rates and computes ETags (`true` or `false`).
    #[arg(long, action = clap::ArgAction::Set)]
    guards: bool,
}

async fn run_bench(args: BenchArgs) -> Outcome {
    let options = BenchOptions {
        database_url: args.database_url,
        duration: Duration::from_secs(args.seconds),
        concurrency: args.concurrency,
        agents: args.agents,
        agent_slots: args.agent_slots,
        cycle_tasks: args.cycle_tasks,
        pace: Some(args.pace).filter(|rate| *rate > 0.0),
    };
    let backend = backend_name(&options.database_url).to_owned();
    let report = api::run(&options).await?;
    for figure in report.api {
        println!(
            "{backend:<9} {figure}   ({} clients, {} s)",
            options.concurrency, args.seconds
        );
    }
    for figure in report.paced {
        println!(
            "{backend:<9} {figure}   (paced at {} req/s, {} clients, {} s)",
            args.pace, options.concurrency, args.seconds
        );
    }
    println!(
        "{backend:<9} {}   ({} producers)",
        report.cycle, options.concurrency
    );
    Ok(())
}

/// The backend a database URL names (`sqlite`, `postgres`), for the figures' first column.
fn backend_name(database_url: &str) -> &str {
    database_url.split(':').next().unwrap_or("?")
}

async fn run_bench_flow(args: BenchFlowArgs) -> Outcome {
    let options = BenchOptions {
        database_url: args.database_url,
        ..BenchOptions::load(Duration::from_secs(args.seconds), args.concurrency)
    };
    let backend = backend_name(&options.database_url).to_owned();
    let report = flow::run(&options, args.rounds).await?;
    println!(
        "{backend:<9} {}   ({} clients, {} s)",
        report.batches, args.concurrency, args.seconds
    );
    println!(
        "{backend:<9} batch create: {:.0} tasks/s",
        report.batch_tasks_per_second
    );
    println!(
        "{backend:<9} parent completed → child claimed: p50 {:.2} ms   p99 {:.2} ms   ({} hand-offs)",
        report.handoff_p50_ms, report.handoff_p99_ms, report.handoffs
    );
    Ok(())
}

async fn run_bench_cache(args: BenchCacheArgs) -> Outcome {
    let options = BenchOptions::load(Duration::from_secs(args.seconds), args.concurrency);
    let report = api::cache(&options, &args.redis_url).await?;
    for figure in &report.gets {
        println!(
            "cache     {figure}   ({} clients, {} s)",
            args.concurrency, args.seconds
        );
    }
    println!(
        "cache     service-on-redis / plain-redis throughput: {:.2}",
        report.redis_ratio
    );
    println!(
        "cache     agent config read mix: hit rate {:.1} % ({} reads, {} reached the database)",
        report.hit_rate() * 100.0,
        report.config_reads,
        report.config_misses
    );
    Ok(())
}

async fn run_bench_overhead(args: BenchOverheadArgs) -> Outcome {
    let options = BenchOptions::load(Duration::from_secs(args.seconds), args.concurrency);
    std::fs::create_dir_all(&args.data_dir)?;
    let report = overhead::measure(&options, args.rounds.max(1), &args.data_dir).await?;
    for measured in &report.variants {
        let runs: Vec<String> = measured
            .runs
            .iter()
            .map(|run| {
                format!(
                    "{:.0} req/s p50 {:.2} p99 {:.2} ms cpu {:.3} ms",
                    run.throughput, run.p50_ms, run.p99_ms, run.cpu_ms
                )
            })
            .collect();
        // On a saturated machine throughput is the inverse of CPU time per request: two
        // views of one cost, the second less moved by what else the machine runs.
        println!(
            "overhead  {:<16} {:>8.1} req/s   {:.3} of baseline   cpu {:.3} ms/req: {:.3} of baseline capacity   ({})",
            measured.variant.name,
            measured.throughput(),
            report.throughput_ratio(measured),
            measured.cpu_ms(),
            report.capacity_ratio(measured),
            runs.join("; ")
        );
    }
    println!(
        "overhead  get task, {} clients, {} s per run, {} rounds; spans received by the collector: {}",
        args.concurrency, args.seconds, args.rounds, report.spans_exported
    );
    Ok(())
}

async fn run_bench_read(args: BenchReadArgs) -> Outcome {
    let options = BenchOptions {
        database_url: args.database_url,
        ..BenchOptions::load(Duration::from_secs(args.seconds), args.concurrency)
    };
    let get = api::read_path(
        &options,
        api::ReadPath {
            report_metrics: args.report_metrics,
            guards: args.guards,
        },
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({
            "throughput": get.throughput,
            "p50_ms": get.p50_ms,
            "p99_ms": get.p99_ms,
            "cpu_ms": get.cpu_ms,
            "ok": get.succeeded,
            "failed": get.failed,
        })
    );
    Ok(())
}

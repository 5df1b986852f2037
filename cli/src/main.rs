//! The `swarm` command: `swarm up` runs every service and the gateway in one process,
//! `swarm serve <role>` runs one role alone (for separate deployment), and `swarm bench`
//! measures the API.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use swarm_agents::AgentsConfig;
use swarm_cache::CacheConfig;
use swarm_cli::bench::{self, BenchOptions};
use swarm_cli::stack::{Stack, StackConfig};
use swarm_cli::{keys, overhead};
use swarm_gateway::GatewayConfig;
use swarm_metrics::MetricsConfig;
use swarm_tasks::TasksConfig;
use tracing::{error, info};

/// Swarm: a control plane for fleets of worker agents.
#[derive(Debug, Parser)]
#[command(name = "swarm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts every service and the gateway in one process (SQLite under ./data by default).
    Up(UpArgs),
    /// Runs one role alone.
    Serve(ServeArgs),
    /// Measures create-task and get-task throughput and latency through the gateway.
    Bench(BenchArgs),
    /// Runs an example agent that does `echo` and `sleep` tasks.
    Agent(AgentArgs),
    /// Manages API keys in the gateway's key database.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measures cache gets (memory, Redis, plain Redis) and the hit rate of agent config reads.
    BenchCache(BenchCacheArgs),
    /// Measures what span export, the metrics layer and the gateway's guards cost on get-task.
    BenchOverhead(BenchOverheadArgs),
    /// Measures get-task once and prints the figures as JSON (run by bench-overhead).
    #[command(hide = true)]
    BenchRead(BenchReadArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issues a key and prints its secret (shown this once).
    Create {
        /// Who or what it is for; a client's tasks are recorded under this name.
        #[arg(long)]
        name: String,
        /// admin, client or agent.
        #[arg(long)]
        role: String,
        /// The agent an agent key acts for.
        #[arg(long)]
        agent_id: Option<String>,
        /// The key database (default: the gateway's).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Lists keys, without their secrets.
    List {
        /// The key database (default: the gateway's).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Revokes a key at once.
    Revoke {
        /// The key's id.
        id: String,
        /// The key database (default: the gateway's).
        #[arg(long)]
        database_url: Option<String>,
    },
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
struct AgentArgs {
    /// The agent's unique name.
    #[arg(long)]
    name: String,
    /// A capability (repeat for more).
    #[arg(long = "capability", default_values_t = ["echo".to_owned(), "sleep".to_owned()])]
    capabilities: Vec<String>,
    /// How many tasks it runs at once.
    #[arg(long, default_value_t = 2)]
    concurrency: u32,
    /// The gateway (it answers the worker's gRPC calls beside REST).
    #[arg(long, env = "SWARM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An agent key (the agent it is bound to runs here), or an admin key (the agent `--name`
    /// is registered).
    #[arg(long, env = "SWARM_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where the gateway listens.
    #[arg(long, env = "SWARM_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    /// Where the tasks service listens.
    #[arg(long, env = "SWARM_TASKS_ADDR", default_value = "127.0.0.1:50051")]
    tasks_addr: SocketAddr,
    /// Where the agents service listens.
    #[arg(long, env = "SWARM_AGENTS_ADDR", default_value = "127.0.0.1:50052")]
    agents_addr: SocketAddr,
    /// Where the cache service listens.
    #[arg(long, env = "SWARM_CACHE_ADDR", default_value = "127.0.0.1:50053")]
    cache_addr: SocketAddr,
    /// Where the metrics service listens (gRPC, and `GET /metrics` for scrapers).
    #[arg(long, env = "SWARM_METRICS_ADDR", default_value = "127.0.0.1:50054")]
    metrics_addr: SocketAddr,
    /// The database (overrides DATABASE_URL): sqlite://path or postgres://...
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    /// The tasks gRPC service.
    Tasks,
    /// The agents gRPC service.
    Agents,
    /// The cache gRPC service.
    Cache,
    /// The metrics gRPC service (and its Prometheus page).
    Metrics,
    /// The REST gateway.
    Gateway,
}

impl Role {
    /// Returns the variable that sets the role's address, and its default from API.md.
    fn default_addr(self) -> (&'static str, &'static str) {
        match self {
            Self::Tasks => ("SWARM_TASKS_ADDR", "127.0.0.1:50051"),
            Self::Agents => ("SWARM_AGENTS_ADDR", "127.0.0.1:50052"),
            Self::Cache => ("SWARM_CACHE_ADDR", "127.0.0.1:50053"),
            Self::Metrics => ("SWARM_METRICS_ADDR", "127.0.0.1:50054"),
            Self::Gateway => ("SWARM_GATEWAY_ADDR", "127.0.0.1:8080"),
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The role to run.
    role: Role,
    /// Where to listen (default: the role's address from SWARM_<ROLE>_ADDR or API.md).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The database (overrides DATABASE_URL), for roles that have one.
    #[arg(long)]
    database_url: Option<String>,
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
    /// Tasks sent through the queue in the cycle benchmark.
    #[arg(long, default_value_t = 5000)]
    cycle_tasks: u64,
    /// Requests per second of the paced create and get runs, which measure latency below
    /// saturation (0: no paced runs).
    #[arg(long, default_value_t = 1000.0)]
    pace: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Serve(args) => match args.role {
            Role::Tasks => "swarm-tasks",
            Role::Agents => "swarm-agents",
            Role::Cache => "swarm-cache",
            Role::Metrics => "swarm-metrics",
            Role::Gateway => "swarm-gateway",
        },
        Command::Agent(_) => "swarm-agent",
        Command::Keys(_) => "swarm-keys",
        Command::Up(_)
        | Command::Bench(_)
        | Command::BenchCache(_)
        | Command::BenchOverhead(_)
        | Command::BenchRead(_) => "swarm",
    };
    let telemetry = match swarm_kit::telemetry::init(service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("swarm: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Up(args) => up(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => run_bench(args).await,
        Command::Agent(args) => run_agent(args).await,
        Command::Keys(command) => run_keys(command).await,
        Command::BenchCache(args) => run_bench_cache(args).await,
        Command::BenchOverhead(args) => run_bench_overhead(args).await,
        Command::BenchRead(args) => run_bench_read(args).await,
    };
    // Export the spans still buffered; the exporter blocks, so not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "swarm stopped");
            eprintln!("swarm: {error}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

async fn up(args: UpArgs) -> Outcome {
    let mut tasks = TasksConfig::from_env()?;
    let mut agents = AgentsConfig::from_env()?;
    let mut gateway = GatewayConfig::from_env()?;
    if let Some(url) = args.database_url {
        tasks.database_url.clone_from(&url);
        agents.database_url.clone_from(&url);
        gateway.database_url = url;
    }
    let stack = Stack::start(StackConfig {
        gateway_addr: args.gateway_addr,
        tasks_addr: args.tasks_addr,
        agents_addr: args.agents_addr,
        cache_addr: args.cache_addr,
        metrics_addr: args.metrics_addr,
        report_metrics: true,
        service_token: swarm_kit::service_auth::ServiceToken::from_env()?,
        tasks,
        agents,
        cache: CacheConfig::from_env()?,
        metrics: MetricsConfig::from_env()?,
        gateway,
    })
    .await?;
    info!(
        gateway = %stack.gateway_url(),
        tasks = %stack.tasks_url(),
        agents = %stack.agents_url(),
        cache = %stack.cache_url(),
        metrics = %stack.metrics_url(),
        "swarm is up; ctrl-c stops it"
    );
    stack.run_until(swarm_kit::shutdown::signal()).await?;
    Ok(())
}

async fn serve(args: ServeArgs) -> Outcome {
    let shutdown = swarm_kit::shutdown::signal();
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let (variable, default) = args.role.default_addr();
            role_addr(variable, default)?
        }
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    match args.role {
        Role::Tasks => {
            let mut config = TasksConfig::from_env()?;
            if let Some(url) = args.database_url {
                config.database_url = url;
            }
            swarm_tasks::run(listener, config, shutdown).await?;
        }
        Role::Agents => {
            let mut config = AgentsConfig::from_env()?;
            if let Some(url) = args.database_url {
                config.database_url = url;
            }
            swarm_agents::run(listener, config, shutdown).await?;
        }
        Role::Cache => swarm_cache::run(listener, CacheConfig::from_env()?, shutdown).await?,
        Role::Metrics => {
            swarm_metrics::run(listener, MetricsConfig::from_env()?, shutdown).await?;
        }
        Role::Gateway => {
            let mut config = GatewayConfig::from_env()?;
            if let Some(url) = args.database_url {
                config.database_url = url;
            }
            swarm_gateway::run(listener, config, shutdown).await?;
        }
    }
    Ok(())
}

fn role_addr(variable: &str, default: &str) -> Result<SocketAddr, swarm_kit::config::ConfigError> {
    let mut addr: SocketAddr = default.parse().expect("default addresses parse");
    swarm_kit::config::override_from_env(&mut addr, &[variable])?;
    Ok(addr)
}

async fn run_bench(args: BenchArgs) -> Outcome {
    let options = BenchOptions {
        database_url: args.database_url,
        duration: Duration::from_secs(args.seconds),
        concurrency: args.concurrency,
        agents: args.agents,
        cycle_tasks: args.cycle_tasks,
        pace: Some(args.pace).filter(|rate| *rate > 0.0),
    };
    let backend = options
        .database_url
        .split(':')
        .next()
        .unwrap_or("?")
        .to_owned();
    let report = bench::run(&options).await?;
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

async fn run_agent(args: AgentArgs) -> Outcome {
    let gateway = swarm_sdk::Gateway {
        url: args.url,
        api_key: args.key,
    };
    let mut spec = swarm_sdk::AgentSpec::new(args.name).max_concurrency(args.concurrency);
    spec.capabilities = args.capabilities;
    let worker = swarm_sdk::Worker::register(&gateway, spec).await?;
    info!(agent_id = worker.id(), "agent joined; ctrl-c stops it");
    worker
        .run(swarm_cli::agent::handle, swarm_kit::shutdown::signal())
        .await?;
    info!("agent stopped; it shows offline once its heartbeats are missed");
    Ok(())
}

async fn run_bench_cache(args: BenchCacheArgs) -> Outcome {
    let options = BenchOptions::load(Duration::from_secs(args.seconds), args.concurrency);
    let report = bench::cache(&options, &args.redis_url).await?;
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
    let get = bench::read_path(
        &options,
        bench::ReadPath {
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

async fn run_keys(command: KeysCommand) -> Outcome {
    let database = |given: Option<String>| -> Result<String, swarm_kit::config::ConfigError> {
        match given {
            Some(url) => Ok(url),
            None => GatewayConfig::from_env().map(|config| config.database_url),
        }
    };
    match command {
        KeysCommand::Create {
            name,
            role,
            agent_id,
            database_url,
        } => {
            let registry = keys::open(&database(database_url)?).await?;
            let (key, secret) = keys::create(&registry, name, &role, agent_id.as_deref()).await?;
            println!("{secret}");
            eprintln!(
                "issued {} key {} ({}); the secret above is shown this once",
                key.role.as_str(),
                key.id,
                key.name
            );
        }
        KeysCommand::List { database_url } => {
            let registry = keys::open(&database(database_url)?).await?;
            println!(
                "{:<36}  {:<7}  {:<12}  {:<9}  name",
                "id", "role", "prefix", "state"
            );
            for key in keys::list(&registry).await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<7}  {:<12}  {:<9}  {}{}",
                    key.id,
                    key.role.as_str(),
                    key.prefix,
                    state,
                    key.name,
                    key.agent_id
                        .map(|agent| format!(" (agent {agent})"))
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { id, database_url } => {
            let registry = keys::open(&database(database_url)?).await?;
            let key = keys::revoke(&registry, &id).await?;
            println!(
                "revoked {} key {} ({})",
                key.role.as_str(),
                key.id,
                key.name
            );
        }
    }
    Ok(())
}

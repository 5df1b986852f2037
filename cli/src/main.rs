//! The `swarm` command: `swarm up` runs every service and the gateway in one process,
//! `swarm serve <role>` runs one role alone (for separate deployment), `swarm agent` runs an
//! example worker, `swarm keys` manages API keys, and `swarm task`, `swarm agents` and
//! `swarm health` drive the API from a terminal.

use std::net::SocketAddr;
use std::process::ExitCode;
use swarm_kit::config::defaults;

use clap::{Parser, Subcommand, ValueEnum};
use swarm_agents::AgentsConfig;
use swarm_cache::CacheConfig;
use swarm_cli::stack::{Stack, StackConfig};
use swarm_cli::{client, keys, mcp};
use swarm_gateway::GatewayConfig;
use swarm_metrics::MetricsConfig;
use swarm_tasks::TasksConfig;
use tracing::{error, info};

/// mimalloc rather than the system allocator: a request allocates many small short-lived
/// objects on two runtime threads, where glibc's malloc spent a seventh of the CPU (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Swarm: a control plane for fleets of worker agents.
#[derive(Debug, Parser)]
#[command(name = "swarm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Process(ProcessCommand),
    /// Submits, reads, lists, cancels, retries and watches tasks.
    Task {
        #[command(subcommand)]
        command: client::TaskCommand,
        #[command(flatten)]
        calls: client::Calls,
    },
    /// Lists agents.
    Agents {
        #[command(subcommand)]
        command: client::AgentsCommand,
        #[command(flatten)]
        calls: client::Calls,
    },
    /// Tells whether every service answers (exit 0) or not (exit 1).
    Health {
        #[command(flatten)]
        calls: client::Calls,
    },
    /// Serves MCP over stdin and stdout for desktop MCP clients, proxied to the gateway's
    /// `/mcp` with the key.
    Mcp {
        #[command(flatten)]
        connection: client::Connection,
    },
}

/// The commands that run Swarm's processes or manage its keys.
#[derive(Debug, Subcommand)]
enum ProcessCommand {
    /// Starts every service and the gateway in one process (SQLite under ./data by default).
    Up(UpArgs),
    /// Runs one role alone.
    Serve(ServeArgs),
    /// Runs an example agent that does `echo` and `sleep` tasks.
    Agent(AgentArgs),
    /// Manages API keys in the gateway's key database.
    #[command(subcommand)]
    Keys(KeysCommand),
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
    #[arg(long, env = "SWARM_URL", default_value = defaults::GATEWAY_URL)]
    url: String,
    /// An agent key (the agent it is bound to runs here), or an admin key (the agent `--name`
    /// is registered).
    #[arg(long, env = "SWARM_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where the gateway listens.
    #[arg(long, env = "SWARM_GATEWAY_ADDR", default_value = defaults::GATEWAY_ADDR)]
    gateway_addr: SocketAddr,
    /// Where the tasks service listens.
    #[arg(long, env = "SWARM_TASKS_ADDR", default_value = defaults::TASKS_ADDR)]
    tasks_addr: SocketAddr,
    /// Where the agents service listens.
    #[arg(long, env = "SWARM_AGENTS_ADDR", default_value = defaults::AGENTS_ADDR)]
    agents_addr: SocketAddr,
    /// Where the cache service listens.
    #[arg(long, env = "SWARM_CACHE_ADDR", default_value = defaults::CACHE_ADDR)]
    cache_addr: SocketAddr,
    /// Where the metrics service listens (gRPC, and `GET /metrics` for scrapers).
    #[arg(long, env = "SWARM_METRICS_ADDR", default_value = defaults::METRICS_ADDR)]
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
            Self::Tasks => ("SWARM_TASKS_ADDR", defaults::TASKS_ADDR),
            Self::Agents => ("SWARM_AGENTS_ADDR", defaults::AGENTS_ADDR),
            Self::Cache => ("SWARM_CACHE_ADDR", defaults::CACHE_ADDR),
            Self::Metrics => ("SWARM_METRICS_ADDR", defaults::METRICS_ADDR),
            Self::Gateway => ("SWARM_GATEWAY_ADDR", defaults::GATEWAY_ADDR),
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let answered = match cli.command {
        Command::Process(command) => return run_process(command).await,
        Command::Task { command, calls } => client::task(command, calls).await,
        Command::Agents { command, calls } => client::agents(command, calls).await,
        Command::Health { calls } => client::health(calls).await,
        Command::Mcp { connection } => mcp::run(connection).await.map(|()| ExitCode::SUCCESS),
    };
    answered.unwrap_or_else(|error| {
        eprintln!("swarm: {error}");
        match error {
            client::ClientError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    })
}

/// Runs the commands that start processes or manage keys, with telemetry.
async fn run_process(command: ProcessCommand) -> ExitCode {
    let service = match &command {
        ProcessCommand::Serve(args) => match args.role {
            Role::Tasks => "swarm-tasks",
            Role::Agents => "swarm-agents",
            Role::Cache => "swarm-cache",
            Role::Metrics => "swarm-metrics",
            Role::Gateway => "swarm-gateway",
        },
        ProcessCommand::Agent(_) => "swarm-agent",
        ProcessCommand::Keys(_) => "swarm-keys",
        ProcessCommand::Up(_) => "swarm",
    };
    let telemetry = match swarm_kit::telemetry::init(service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("swarm: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match command {
        ProcessCommand::Up(args) => up(args).await,
        ProcessCommand::Serve(args) => serve(args).await,
        ProcessCommand::Agent(args) => run_agent(args).await,
        ProcessCommand::Keys(command) => run_keys(command).await,
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
    let mut stack = StackConfig {
        gateway_addr: args.gateway_addr,
        tasks_addr: args.tasks_addr,
        agents_addr: args.agents_addr,
        cache_addr: args.cache_addr,
        metrics_addr: args.metrics_addr,
        report_metrics: true,
        service_credentials: swarm_kit::service_auth::ServiceCredentials::from_env()?,
        tasks: TasksConfig::from_env()?,
        agents: AgentsConfig::from_env()?,
        cache: CacheConfig::from_env()?,
        metrics: MetricsConfig::from_env()?,
        gateway: GatewayConfig::from_env()?,
    };
    // One process, one tasks service: it writes its database alone unless told otherwise.
    if std::env::var_os("SWARM_TASKS_SOLE_WRITER").is_none() {
        stack.tasks.sole_writer = true;
    }
    if let Some(url) = args.database_url {
        stack = stack.over(&url);
    }
    let stack = Stack::start(stack).await?;
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
                config.database.url = url;
            }
            swarm_tasks::run(listener, config, shutdown).await?;
        }
        Role::Agents => {
            let mut config = AgentsConfig::from_env()?;
            if let Some(url) = args.database_url {
                config.database.url = url;
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
                config.database.url = url;
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

async fn run_keys(command: KeysCommand) -> Outcome {
    let database = |given: Option<String>| -> Result<String, swarm_kit::config::ConfigError> {
        match given {
            Some(url) => Ok(url),
            None => GatewayConfig::from_env().map(|config| config.database.url),
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

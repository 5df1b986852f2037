//! Every Swarm process in one: binds each role's listener, points the gateway at the services'
//! actual addresses, runs them all on real gRPC over loopback, and stops them together.

use std::net::SocketAddr;

use swarm_agents::AgentsConfig;
use swarm_cache::CacheConfig;
use swarm_gateway::GatewayConfig;
use swarm_kit::RunError;
use swarm_kit::metrics::ReporterConfig;
use swarm_kit::service_auth::ServiceCredentials;
use swarm_metrics::MetricsConfig;
use swarm_tasks::TasksConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// Where each role listens and how each is configured.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The gateway's address (port 0 picks a free one).
    pub gateway_addr: SocketAddr,
    /// The tasks service's address.
    pub tasks_addr: SocketAddr,
    /// The agents service's address.
    pub agents_addr: SocketAddr,
    /// The cache service's address.
    pub cache_addr: SocketAddr,
    /// The metrics service's address.
    pub metrics_addr: SocketAddr,
    /// Whether every role reports its metrics to the metrics service; each role's reporting
    /// interval stays its own.
    pub report_metrics: bool,
    /// The secret every role's calls carry and every service demands; it replaces each role's
    /// own.
    pub service_credentials: ServiceCredentials,
    /// The tasks service's configuration; its agents URL is replaced by the bound address.
    pub tasks: TasksConfig,
    /// The agents service's configuration; its tasks URL is replaced by the bound address.
    pub agents: AgentsConfig,
    /// The cache service's configuration.
    pub cache: CacheConfig,
    /// The metrics service's configuration.
    pub metrics: MetricsConfig,
    /// The gateway's configuration; its service URLs are replaced by the bound addresses.
    pub gateway: GatewayConfig,
}

impl StackConfig {
    /// Every role on a free loopback port, with default settings, over one database.
    pub fn local(database_url: &str) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            gateway_addr: any_port,
            tasks_addr: any_port,
            agents_addr: any_port,
            cache_addr: any_port,
            metrics_addr: any_port,
            report_metrics: true,
            service_credentials: ServiceCredentials::default(),
            tasks: TasksConfig::default(),
            agents: AgentsConfig::default(),
            cache: CacheConfig::default(),
            metrics: MetricsConfig::default(),
            gateway: GatewayConfig::default(),
        }
        .over(database_url)
    }

    /// Returns this stack with every role that has a database using the one at `url`.
    #[must_use]
    pub fn over(mut self, url: &str) -> Self {
        for database in [
            &mut self.tasks.database,
            &mut self.agents.database,
            &mut self.gateway.database,
        ] {
            url.clone_into(&mut database.url);
        }
        self
    }
}

/// Why the stack could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {role}: {source}")]
    Bind {
        /// The role.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A role failed.
    #[error("{role} failed: {source}")]
    Role {
        /// The role.
        role: &'static str,
        /// Why.
        source: RunError,
    },
}

/// One role's run, boxed so that every role fits one join set.
type RoleFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>>;

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    /// Where the gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the tasks service listens.
    pub tasks_addr: SocketAddr,
    /// Where the agents service listens.
    pub agents_addr: SocketAddr,
    /// Where the cache service listens.
    pub cache_addr: SocketAddr,
    /// Where the metrics service listens.
    pub metrics_addr: SocketAddr,
    /// `https` when the services speak TLS, else `http`.
    scheme: &'static str,
    shutdown: CancellationToken,
    roles: JoinSet<(&'static str, Result<(), RunError>)>,
}

impl Stack {
    /// Binds every listener and starts every role. Requests may be sent as soon as this
    /// returns: connections wait in the listeners' backlogs until each role serves.
    pub async fn start(config: StackConfig) -> Result<Self, StackError> {
        let tasks_listener = bind("tasks", config.tasks_addr).await?;
        let agents_listener = bind("agents", config.agents_addr).await?;
        let cache_listener = bind("cache", config.cache_addr).await?;
        let metrics_listener = bind("metrics", config.metrics_addr).await?;
        let gateway_listener = bind("gateway", config.gateway_addr).await?;
        let tasks_addr = local_addr("tasks", &tasks_listener)?;
        let agents_addr = local_addr("agents", &agents_listener)?;
        let cache_addr = local_addr("cache", &cache_listener)?;
        let metrics_addr = local_addr("metrics", &metrics_listener)?;
        let gateway_addr = local_addr("gateway", &gateway_listener)?;
        let scheme = service_scheme(&config.service_credentials);
        let (tasks_url, agents_url) = (
            format!("{scheme}://{tasks_addr}"),
            format!("{scheme}://{agents_addr}"),
        );
        let cache_url = format!("{scheme}://{cache_addr}");
        let metrics_url = config
            .report_metrics
            .then(|| format!("{scheme}://{metrics_addr}"));
        let reporting = |metrics: ReporterConfig| ReporterConfig {
            url: metrics_url.clone(),
            ..metrics
        };
        let tasks = TasksConfig {
            agents_url: agents_url.clone(),
            cache_url: cache_url.clone(),
            metrics: reporting(config.tasks.metrics.clone()),
            service_credentials: config.service_credentials.clone(),
            ..config.tasks
        };
        let agents = AgentsConfig {
            cache_url: cache_url.clone(),
            metrics: reporting(config.agents.metrics.clone()),
            service_credentials: config.service_credentials.clone(),
            ..config.agents
        };
        let cache = CacheConfig {
            metrics: reporting(config.cache.metrics.clone()),
            service_credentials: config.service_credentials.clone(),
            ..config.cache
        };
        let metrics = MetricsConfig {
            reporter: reporting(config.metrics.reporter.clone()),
            service_credentials: config.service_credentials.clone(),
            ..config.metrics
        };
        let gateway = GatewayConfig {
            tasks_url,
            agents_url,
            cache_url,
            metrics: reporting(config.gateway.metrics.clone()),
            service_credentials: config.service_credentials.clone(),
            ..config.gateway
        };
        let shutdown = CancellationToken::new();
        let mut roles = JoinSet::new();
        let stop = || shutdown.clone().cancelled_owned();
        let mut spawn = |role: &'static str, running| {
            roles.spawn(async move { (role, running.await) });
        };
        spawn(
            "tasks",
            Box::pin(swarm_tasks::run(tasks_listener, tasks, stop())) as RoleFuture,
        );
        spawn(
            "agents",
            Box::pin(swarm_agents::run(agents_listener, agents, stop())),
        );
        spawn(
            "cache",
            Box::pin(swarm_cache::run(cache_listener, cache, stop())),
        );
        spawn(
            "metrics",
            Box::pin(swarm_metrics::run(metrics_listener, metrics, stop())),
        );
        spawn(
            "gateway",
            Box::pin(swarm_gateway::run(gateway_listener, gateway, stop())),
        );
        Ok(Self {
            gateway_addr,
            tasks_addr,
            agents_addr,
            cache_addr,
            metrics_addr,
            scheme,
            shutdown,
            roles,
        })
    }

    /// Returns the gateway's base URL, such as `http://127.0.0.1:8080`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    /// Returns the tasks service's gRPC URL.
    pub fn tasks_url(&self) -> String {
        format!("{}://{}", self.scheme, self.tasks_addr)
    }

    /// Returns the cache service's gRPC URL.
    pub fn cache_url(&self) -> String {
        format!("{}://{}", self.scheme, self.cache_addr)
    }

    /// Returns the metrics service's URL (gRPC, and `GET /metrics` for scrapers).
    pub fn metrics_url(&self) -> String {
        format!("{}://{}", self.scheme, self.metrics_addr)
    }

    /// Returns the agents service's gRPC URL.
    pub fn agents_url(&self) -> String {
        format!("{}://{}", self.scheme, self.agents_addr)
    }

    /// Runs until `signal` resolves or a role fails, then stops every role and waits for them.
    /// Returns the first failure, if any.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), StackError> {
        let mut failure = None;
        tokio::select! {
            () = signal => {}
            Some(joined) = self.roles.join_next() => failure = role_failure(joined),
        }
        self.shutdown.cancel();
        while let Some(joined) = self.roles.join_next().await {
            if let Some(error) = role_failure(joined) {
                error!(%error, "role stopped with an error");
                failure.get_or_insert(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Stops every role and waits for them.
    pub async fn stop(self) -> Result<(), StackError> {
        self.run_until(std::future::ready(())).await
    }
}

impl StackError {
    /// Wraps a socket error of a caller that binds its own listener.
    pub fn from_io(source: std::io::Error) -> Self {
        Self::Role {
            role: "listener",
            source: RunError::Io(source),
        }
    }
}

fn role_failure(
    joined: Result<(&'static str, Result<(), RunError>), tokio::task::JoinError>,
) -> Option<StackError> {
    match joined {
        Ok((_, Ok(()))) => None,
        Ok((role, Err(source))) => Some(StackError::Role { role, source }),
        Err(panic) => Some(StackError::Role {
            role: "unknown",
            source: RunError::Io(std::io::Error::other(panic.to_string())),
        }),
    }
}

/// The scheme of service URLs: `https` when the services serve TLS.
fn service_scheme(credentials: &ServiceCredentials) -> &'static str {
    if credentials.serves_tls() {
        "https"
    } else {
        "http"
    }
}

async fn bind(role: &'static str, addr: SocketAddr) -> Result<TcpListener, StackError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StackError::Bind { role, addr, source })
}

fn local_addr(role: &'static str, listener: &TcpListener) -> Result<SocketAddr, StackError> {
    listener.local_addr().map_err(|source| StackError::Bind {
        role,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

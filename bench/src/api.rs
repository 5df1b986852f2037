//! The load generator behind `swarm-bench api`: starts the whole stack in this process on free
//! ports over a given database, drives the gateway's REST API with concurrent clients for a
//! fixed time per operation, and runs the full queue cycle (enqueue → claim → complete) with
//! SDK agents; it reports throughput and latency percentiles.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use std::sync::atomic::{AtomicU64, Ordering};

use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::agents::v1::agent_service_client::AgentServiceClient;
use swarm_proto::cache::v1 as cache_pb;
use swarm_proto::cache::v1::cache_service_client::CacheServiceClient;
use swarm_proto::common::v1::PageRequest;
use swarm_proto::tasks::v1 as pb;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;
use swarm_sdk::{AgentSpec, Assignment, Failure, Gateway, Worker};
use tokio_util::sync::CancellationToken;

use swarm_gateway::GatewayConfig;

use swarm_cli::stack::{Stack, StackConfig, StackError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The database the tasks service uses.
    pub database_url: String,
    /// How long each operation is driven.
    pub duration: Duration,
    /// How many clients send requests at once.
    pub concurrency: usize,
    /// How many agents work the queue in the cycle benchmark.
    pub agents: usize,
    /// How many tasks each of those agents runs at once (its `max_concurrency`).
    pub agent_slots: u32,
    /// How many tasks go through the queue in the cycle benchmark.
    pub cycle_tasks: u64,
    /// The request rate of the paced runs (all clients together, per second): each request
    /// leaves at its scheduled time and its latency counts from then, so a slow answer that
    /// delays the next send is not hidden. No paced runs when `None`.
    pub pace: Option<f64>,
}

impl BenchOptions {
    /// Drives `concurrency` clients for `duration` at a stack of its own, no database named.
    pub fn load(duration: Duration, concurrency: usize) -> Self {
        Self {
            database_url: String::new(),
            duration,
            concurrency,
            agents: 0,
            agent_slots: 0,
            cycle_tasks: 0,
            pace: None,
        }
    }
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// REST operations through the gateway, as fast as the clients can send.
    pub api: Vec<Figures>,
    /// The same operations at the paced rate.
    pub paced: Vec<Figures>,
    /// The queue cycle.
    pub cycle: CycleFigures,
}

/// The figures of the queue cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleFigures {
    /// Agents that worked the queue.
    pub agents: usize,
    /// Tasks each agent ran at once.
    pub agent_slots: u32,
    /// Tasks that went through it.
    pub tasks: u64,
    /// Tasks completed per second, from the first enqueue to the last completion.
    pub throughput: f64,
    /// Median time from creation to completion, in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile time from creation to completion, in milliseconds.
    pub p99_ms: f64,
}

impl std::fmt::Display for CycleFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<12} {:>9} tasks {} agents × {} slots {:>6.1} tasks/s   created→completed p50 {:>7.2} ms   p99 {:>7.2} ms",
            "queue cycle",
            self.tasks,
            self.agents,
            self.agent_slots,
            self.throughput,
            self.p50_ms,
            self.p99_ms
        )
    }
}

/// The figures of one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// What was measured.
    pub operation: &'static str,
    /// Requests that answered with success.
    pub succeeded: u64,
    /// Requests that failed or answered with an error status.
    pub failed: u64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// CPU time this process (clients and stack alike) spent per successful request, in
    /// milliseconds: unlike throughput, it does not move with what else the machine runs.
    pub cpu_ms: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<12} {:>9} ok {:>5} failed {:>10.1} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>6.3} ms/req",
            self.operation,
            self.succeeded,
            self.failed,
            self.throughput,
            self.p50_ms,
            self.p99_ms,
            self.cpu_ms
        )
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The stack did not start or stop cleanly.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The HTTP client could not be built.
    #[error("cannot build http client: {0}")]
    Client(#[from] reqwest::Error),
    /// Nothing was created, so reads have nothing to read.
    #[error("no task was created; is the database reachable?")]
    NothingCreated,
    /// An agent or a direct gRPC call failed.
    #[error(transparent)]
    Sdk(#[from] swarm_sdk::SdkError),
    /// Plain Redis could not be reached.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// The queue did not drain in time.
    #[error("only {completed} of {expected} tasks completed in time")]
    Stalled {
        /// Tasks completed.
        completed: u64,
        /// Tasks enqueued.
        expected: u64,
    },
}

/// The figures of the cache benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheReport {
    /// Gets through the cache service with each backend (one call per get, then through the
    /// pipelined client), then plain Redis GETs.
    pub gets: Vec<Figures>,
    /// Cache-service-on-Redis throughput over plain Redis throughput.
    pub redis_ratio: f64,
    /// Agent config reads in the read mix.
    pub config_reads: u64,
    /// Of those, the ones that reached the database (cache misses).
    pub config_misses: u64,
}

impl CacheReport {
    /// Returns the share of config reads the cache answered.
    pub fn hit_rate(&self) -> f64 {
        if self.config_reads == 0 {
            0.0
        } else {
            1.0 - self.config_misses as f64 / self.config_reads as f64
        }
    }
}

/// Keys the get benchmarks read.
const CACHE_KEYS: u64 = 1000;

/// Measures cache-service gets on the memory and Redis backends, each one call per get and
/// through the pipelined client every service uses (its near cache off), against plain Redis
/// GETs; then the hit rate of a realistic read mix of agent configs (skewed reads, occasional
/// updates) through the agents service.
pub async fn cache(options: &BenchOptions, redis_url: &str) -> Result<CacheReport, BenchError> {
    let value = vec![b'x'; 512];
    let mut gets = Vec::new();
    let backends = [
        (
            None,
            [
                "get (memory, one call per get)",
                "get (memory, pipelined client)",
            ],
        ),
        (
            Some(redis_url),
            [
                "get (redis, one call per get)",
                "get (redis, pipelined client)",
            ],
        ),
    ];
    for (redis, [one_call_per_get, pipelined_client]) in backends {
        let config = swarm_cache::CacheConfig {
            redis_url: redis.map(str::to_owned),
            namespace: format!("swarm-bench:{}:", uuid_like()),
            ..swarm_cache::CacheConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(StackError::from_io)?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(StackError::from_io)?
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(swarm_cache::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));
        let pipelined = swarm_kit::cache_client::CacheClient::new(
            &url,
            "k",
            0,
            Duration::ZERO,
            stop.clone(),
            &swarm_kit::service_auth::ServiceCredentials::default(),
        )
        .map_err(|error| BenchError::Sdk(swarm_sdk::SdkError::from(error)))?;
        for n in 0..CACHE_KEYS {
            pipelined
                .set(&format!("k{n}"), value.clone(), Duration::from_secs(600))
                .await;
        }
        let client = CacheServiceClient::new(local_channel(&url)?);
        let unary = |mut client: CacheServiceClient<swarm_kit::grpc::ServiceChannel>, n| async move {
            let get = cache_pb::GetRequest {
                key: format!("k{}", n % CACHE_KEYS),
                namespace: cache_pb::Namespace::internal(),
            };
            client
                .get(get)
                .await
                .ok()
                .filter(|answer| answer.get_ref().found)
                .map(drop)
        };
        gets.push(measure(one_call_per_get, options, &client, unary).await);
        let through_client = |client: swarm_kit::cache_client::CacheClient, n| async move {
            client.get(&format!("k{}", n % CACHE_KEYS)).await.map(drop)
        };
        gets.push(measure(pipelined_client, options, &pipelined, through_client).await);
        pipelined.invalidate_prefix("k").await;
        stop.cancel();
        let _ = server.await;
    }

    let redis = redis::Client::open(redis_url).map_err(BenchError::Redis)?;
    let connection = redis::aio::ConnectionManager::new(redis)
        .await
        .map_err(BenchError::Redis)?;
    let namespace = format!("swarm-bench:{}:", uuid_like());
    for n in 0..CACHE_KEYS {
        let mut connection = connection.clone();
        redis::AsyncCommands::set_ex::<_, _, ()>(
            &mut connection,
            format!("{namespace}k{n}"),
            &value,
            600,
        )
        .await
        .map_err(BenchError::Redis)?;
    }
    let plain = {
        let namespace = namespace.clone();
        measure(
            "plain redis GET",
            options,
            &connection,
            move |mut connection: redis::aio::ConnectionManager, n| {
                let key = format!("{namespace}k{}", n % CACHE_KEYS);
                async move {
                    let value: Option<Vec<u8>> =
                        redis::AsyncCommands::get(&mut connection, key).await.ok()?;
                    value.map(drop)
                }
            },
        )
        .await
    };
    let mut cleanup = connection.clone();
    for n in 0..CACHE_KEYS {
        let _: Result<(), _> =
            redis::AsyncCommands::del(&mut cleanup, format!("{namespace}k{n}")).await;
    }
    // The pipelined client is how services read the cache.
    let redis_ratio = gets[3].throughput / plain.throughput.max(f64::MIN_POSITIVE);
    gets.push(plain);

    let (config_reads, config_misses) = config_read_mix().await?;
    Ok(CacheReport {
        gets,
        redis_ratio,
        config_reads,
        config_misses,
    })
}

/// A channel to a service of the benchmark's own stack (which sets no service token).
fn local_channel(url: &str) -> Result<swarm_kit::grpc::ServiceChannel, BenchError> {
    let open = swarm_kit::service_auth::ServiceCredentials::default();
    swarm_kit::grpc::lazy_channel(url, Duration::from_secs(2), None, &open)
        .map_err(|error| BenchError::Sdk(swarm_sdk::SdkError::from(error)))
}

/// A fresh suffix for benchmark namespaces.
fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

/// Reads agent configs the way a fleet does: 200 agents, 80 % of reads on the busiest 20 %,
/// one update per 100 reads. Returns the reads and how many of them the cache service missed
/// (each miss is a database read).
async fn config_read_mix() -> Result<(u64, u64), BenchError> {
    const AGENTS: usize = 200;
    const READS: u64 = 20_000;
    let database = std::env::temp_dir().join(format!("swarm-bench-{}.db", uuid_like()));
    let url = format!("sqlite://{}", database.display());
    let stack = Stack::start(StackConfig {
        gateway: bench_gateway(&url),
        ..StackConfig::local(&url)
    })
    .await?;
    let channel = local_channel(&stack.agents_url())?;
    let mut agents = AgentServiceClient::new(channel);
    let mut ids = Vec::with_capacity(AGENTS);
    for n in 0..AGENTS {
        let register = agents_pb::RegisterAgentRequest {
            name: format!("mix-{n}"),
            config_json: format!("{{\"model\":\"m{n}\",\"temperature\":0.{n}}}"),
            ..Default::default()
        };
        ids.push(
            agents
                .register_agent(register)
                .await
                .map_err(swarm_sdk::SdkError::from)?
                .into_inner()
                .id,
        );
    }
    let cache_channel = local_channel(&stack.cache_url())?;
    let mut cache = CacheServiceClient::new(cache_channel);
    let before = cache
        .stats(cache_pb::StatsRequest {})
        .await
        .map_err(swarm_sdk::SdkError::from)?
        .into_inner();
    let hot = AGENTS / 5;
    for n in 0..READS {
        let index = if fastrand::u8(0..10) < 8 {
            fastrand::usize(0..hot)
        } else {
            fastrand::usize(hot..AGENTS)
        };
        let id = ids[index].clone();
        if n % 100 == 99 {
            let update = agents_pb::UpdateAgentRequest {
                id: id.clone(),
                config_json: Some(format!("{{\"model\":\"m{index}\",\"revision\":{n}}}")),
                ..Default::default()
            };
            agents
                .update_agent(update)
                .await
                .map_err(swarm_sdk::SdkError::from)?;
        }
        agents
            .get_agent_config(agents_pb::GetAgentConfigRequest { id })
            .await
            .map_err(swarm_sdk::SdkError::from)?;
    }
    let after = cache
        .stats(cache_pb::StatsRequest {})
        .await
        .map_err(swarm_sdk::SdkError::from)?
        .into_inner();
    stack.stop().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = database.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    Ok((READS, after.misses - before.misses))
}

/// Runs the queue cycle, then the create-task and get-task benchmarks (at saturation, then at
/// the paced rate when one is set), and returns the figures.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let stack = Stack::start(StackConfig {
        gateway: bench_gateway(&options.database_url),
        ..StackConfig::local(&options.database_url)
    })
    .await?;
    let measured = measure_all(&stack, options).await;
    stack.stop().await?;
    measured
}

async fn measure_all(stack: &Stack, options: &BenchOptions) -> Result<Report, BenchError> {
    // The cycle runs first, on an empty queue; the API tasks created after it stay queued.
    let cycle = queue_cycle(stack, options).await?;
    let saturated = BenchOptions {
        pace: None,
        ..options.clone()
    };
    let (create, get) = create_then_get(stack, &saturated).await?;
    let paced = match options.pace {
        Some(_) => {
            let (create, get) = create_then_get(stack, options).await?;
            vec![create, get]
        }
        None => Vec::new(),
    };
    Ok(Report {
        api: vec![create, get],
        paced,
        cycle,
    })
}

/// What the read path runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPath {
    /// Whether every process measures its requests and reports them.
    pub report_metrics: bool,
    /// Whether the gateway checks keys, limits rates and computes ETags.
    pub guards: bool,
}

/// Measures the read path alone: starts a stack as `read_path` says, fills it with tasks for
/// `options.duration`, then measures get-task for as long.
pub async fn read_path(options: &BenchOptions, read_path: ReadPath) -> Result<Figures, BenchError> {
    let mut gateway = bench_gateway(&options.database_url);
    if read_path.guards {
        // Limits are checked on every request, but never reached.
        gateway.rate = swarm_gateway::auth::Rate {
            per_second: 1e9,
            burst: u32::MAX,
        };
    } else {
        gateway.auth = false;
        gateway.etags = false;
    }
    let stack = Stack::start(StackConfig {
        report_metrics: read_path.report_metrics,
        gateway,
        ..StackConfig::local(&options.database_url)
    })
    .await?;
    let measured = create_then_get(&stack, options).await;
    stack.stop().await?;
    measured.map(|(_, get)| get)
}

/// The admin key the benchmarks' gateway accepts, as sent.
const BENCH_AUTHORIZATION: &str = "Bearer swarm_bench_key_0123456789abcdef0123456789";

/// The benchmarks' gateway: keys checked as in production (the benchmark's own admin key,
/// whose rate is not limited, so the figures measure the work rather than the limit).
pub fn bench_gateway(database_url: &str) -> GatewayConfig {
    let mut gateway = GatewayConfig {
        admin_key: BENCH_AUTHORIZATION
            .strip_prefix("Bearer ")
            .map(str::to_owned),
        rate: swarm_gateway::auth::Rate {
            per_second: 0.0,
            burst: 0,
        },
        ..GatewayConfig::default()
    };
    database_url.clone_into(&mut gateway.database.url);
    gateway
}

/// Creates tasks through the gateway for `options.duration`, then reads them back for as long.
async fn create_then_get(
    stack: &Stack,
    options: &BenchOptions,
) -> Result<(Figures, Figures), BenchError> {
    let base = stack.gateway_url();
    let client = bench_client(options.concurrency)?;

    let created = Arc::new(Mutex::new(Vec::new()));
    let create = {
        let (base, created) = (base.clone(), created.clone());
        measure("create task", options, &client, move |client, n| {
            let (url, created) = (format!("{base}/api/tasks"), created.clone());
            async move {
                let body =
                    json!({"title": format!("bench {n}"), "kind": "bench", "payload": {"n": n}});
                let response = client.post(url).json(&body).send().await.ok()?;
                let task: serde_json::Value =
                    response.error_for_status().ok()?.json().await.ok()?;
                let id = task["id"].as_str()?.to_owned();
                created.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                Some(())
            }
        })
        .await
    };
    let ids: Arc<[String]> = created
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .into();
    if ids.is_empty() {
        return Err(BenchError::NothingCreated);
    }
    let get = measure("get task", options, &client, move |client, n| {
        let url = format!("{base}/api/tasks/{}", ids[n as usize % ids.len()]);
        async move {
            let response = client.get(url).send().await.ok()?;
            response.error_for_status().ok()?.bytes().await.ok()?;
            Some(())
        }
    })
    .await;
    Ok((create, get))
}

/// An HTTP client that presents the benchmarks' admin key, keeping a connection per client.
pub fn bench_client(concurrency: usize) -> Result<reqwest::Client, BenchError> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static(BENCH_AUTHORIZATION),
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?)
}

/// Runs `options.agents` SDK agents while `options.concurrency` producers enqueue
/// `options.cycle_tasks` tasks over gRPC, and measures until the last one completes.
async fn queue_cycle(stack: &Stack, options: &BenchOptions) -> Result<CycleFigures, BenchError> {
    // Workers join through the gateway, as they do in production.
    let gateway = Gateway {
        url: stack.gateway_url(),
        api_key: BENCH_AUTHORIZATION
            .strip_prefix("Bearer ")
            .map(str::to_owned),
    };
    let stop = CancellationToken::new();
    let mut agents = Vec::new();
    for i in 0..options.agents {
        let spec = AgentSpec::new(format!("bench-agent-{i}"))
            .capability("bench")
            .max_concurrency(options.agent_slots);
        let worker = Worker::register(&gateway, spec).await?;
        let stop = stop.clone();
        agents.push(tokio::spawn(async move {
            let echo = |task: Assignment| async move { Ok::<_, Failure>(task.payload) };
            worker.run(echo, stop.cancelled_owned()).await
        }));
    }
    let channel = local_channel(&stack.tasks_url())?;
    let client = TaskServiceClient::new(channel);

    let started = Instant::now();
    let started_at = SystemTime::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for _ in 0..options.concurrency {
        let (mut client, next, total) = (client.clone(), next.clone(), options.cycle_tasks);
        producers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let request = pb::CreateTaskRequest {
                    title: "cycle".into(),
                    kind: "cycle".into(),
                    required_capabilities: vec!["bench".into()],
                    ..Default::default()
                };
                client.create_task(request).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for producer in producers {
        producer
            .await
            .map_err(|error| tonic::Status::internal(error.to_string()))
            .and_then(|created| created)
            .map_err(swarm_sdk::SdkError::from)?;
    }
    let completed_filter = |page: u32, per_page: u32| pb::ListTasksRequest {
        status: pb::TaskStatus::Completed.into(),
        kind: Some("cycle".into()),
        page: Some(PageRequest { page, per_page }),
        ..Default::default()
    };
    let deadline = started + Duration::from_secs(300);
    let completed = loop {
        let response = client
            .clone()
            .list_tasks(completed_filter(1, 1))
            .await
            .map_err(swarm_sdk::SdkError::from)?;
        let completed = response.into_inner().page.map_or(0, |page| page.total);
        if completed >= options.cycle_tasks || Instant::now() > deadline {
            break completed;
        }
        // The end is read off the tasks' own finish times, so this poll need not be frequent
        // (a frequent one would load the database it measures).
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    for agent in agents {
        if let Ok(Err(error)) = agent.await {
            tracing::warn!(%error, "bench agent stopped with an error");
        }
    }
    if completed < options.cycle_tasks {
        return Err(BenchError::Stalled {
            completed,
            expected: options.cycle_tasks,
        });
    }

    let mut latencies = Vec::with_capacity(usize::try_from(completed).unwrap_or(0));
    let mut last_finished = started_at;
    for page in 1.. {
        let response = client
            .clone()
            .list_tasks(completed_filter(page, 100))
            .await
            .map_err(swarm_sdk::SdkError::from)?;
        let tasks = response.into_inner().tasks;
        if tasks.is_empty() {
            break;
        }
        for task in tasks {
            let times = task
                .created_at
                .zip(task.finished_at)
                .map(|(created, finished)| {
                    (
                        SystemTime::try_from(created),
                        SystemTime::try_from(finished),
                    )
                });
            if let Some((Ok(created), Ok(finished))) = times {
                latencies.push(finished.duration_since(created).unwrap_or_default());
                last_finished = last_finished.max(finished);
            }
        }
    }
    latencies.sort_unstable();
    let elapsed = last_finished
        .duration_since(started_at)
        .unwrap_or_default()
        .as_secs_f64();
    Ok(CycleFigures {
        agents: options.agents,
        agent_slots: options.agent_slots,
        tasks: completed,
        throughput: completed as f64 / elapsed.max(f64::MIN_POSITIVE),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    })
}

/// Drives `request` from `options.concurrency` clients for `options.duration`; each call gets a
/// distinct sequence number and reports success with `Some`.
pub async fn measure<C, F, Fut>(
    operation: &'static str,
    options: &BenchOptions,
    client: &C,
    request: F,
) -> Figures
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<()>> + Send,
{
    let started = Instant::now();
    let cpu_before = swarm_kit::process::cpu_seconds();
    let deadline = started + options.duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let (client, request, counter) = (client.clone(), request.clone(), counter.clone());
        // Paced, each client sends every `every` from its next scheduled time, the clients
        // staggered evenly.
        let mut pacing = options.pace.map(|rate| {
            let every = Duration::from_secs_f64(options.concurrency as f64 / rate);
            let first = started + every.mul_f64(index as f64 / options.concurrency as f64);
            (first, every)
        });
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            loop {
                let sent = match pacing.as_mut() {
                    Some((next, every)) => {
                        let sent = *next;
                        *next += *every;
                        tokio::time::sleep_until(sent.into()).await;
                        sent
                    }
                    None => Instant::now(),
                };
                if sent >= deadline {
                    break;
                }
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match request(client.clone(), n).await {
                    Some(()) => latencies.push(sent.elapsed()),
                    None => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for worker in workers {
        if let Ok((mut mine, my_failures)) = worker.await {
            latencies.append(&mut mine);
            failed += my_failures;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_seconds = swarm_kit::process::cpu_seconds()
        .zip(cpu_before)
        .map_or(0.0, |(after, before)| after - before);
    latencies.sort_unstable();
    Figures {
        cpu_ms: cpu_seconds * 1000.0 / latencies.len().max(1) as f64,
        operation,
        succeeded: latencies.len() as u64,
        failed,
        throughput: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

/// Returns the `q` quantile of sorted latencies, in milliseconds (nearest rank).
pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_clients_send_at_the_rate_asked_and_no_faster() {
        let options = BenchOptions {
            pace: Some(200.0),
            ..BenchOptions::load(Duration::from_secs(1), 4)
        };
        let figures = measure("noop", &options, &(), |(), _| async { Some(()) }).await;
        assert!(
            (190..=201).contains(&figures.succeeded),
            "{} requests in a second at 200/s",
            figures.succeeded
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}

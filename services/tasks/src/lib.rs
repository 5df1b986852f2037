//! The Swarm tasks service: a durable task queue served over gRPC
//! (`swarm.tasks.v1.TaskService`), on SQLite or PostgreSQL.
//!
//! [`run`] is the whole service: it connects and migrates the database, starts the lease
//! sweeper, and serves the queue with health and reflection until shutdown, then drains.

pub mod agents_client;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod maintenance;
pub mod storage;

use std::future::Future;
use std::sync::Arc;

use swarm_kit::RunError;
use swarm_kit::cache_client::CacheClient;
use swarm_kit::clock::Clock;
use swarm_kit::config::ConfigError;
use swarm_kit::host::ServiceHost;
use swarm_kit::metrics::{Registry, names};
use swarm_proto::tasks::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tracing::info;

pub use config::TasksConfig;

/// How many agent profiles the near cache holds.
const PROFILE_CACHE_ENTRIES: u64 = 100_000;

use crate::agents_client::GrpcAgentDirectory;
use crate::domain::{Dispatcher, Scheduler, TaskQueue};
use crate::grpc::TaskGrpc;
use crate::storage::TaskStore;
use crate::storage::current::{CurrentStore, SoleWriter};

/// What holds this service's place among the writers of its database.
enum WritersLock {
    /// A connection holding the PostgreSQL advisory lock.
    Postgres(sqlx::PgConnection),
    /// The locked file beside a SQLite database (none for an in-memory one).
    File(Option<std::fs::File>),
}

/// Runs the tasks service on `listener` until `shutdown` resolves; then it stops accepting,
/// ends waiting claims and watches, lets in-flight calls finish and closes the database.
pub async fn run(
    listener: TcpListener,
    config: TasksConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let pool = config.database.connect().await?;
    let store = storage::open(pool.clone()).await?;
    let sole = Arc::new(SoleWriter::default());
    let alone = config.sole_writer.then_some(sole.as_ref());
    let writers_lock = match &pool {
        swarm_kit::db::Pool::Postgres(pg) => {
            WritersLock::Postgres(storage::join_writers(pg, alone).await?)
        }
        swarm_kit::db::Pool::Sqlite(pools) => {
            WritersLock::File(storage::join_sqlite_writers(pools, alone).await?)
        }
    };
    let store: Arc<dyn TaskStore> = Arc::new(CurrentStore::new(
        store,
        Arc::clone(&sole),
        config.finished_cache_mb * 1024 * 1024,
    ));
    let mut host = ServiceHost::new("tasks", &config.metrics, &config.service_credentials)?;
    let stop = host.stopping();
    let alone = config.sole_writer.then_some(sole);
    match writers_lock {
        WritersLock::Postgres(lock) => {
            host.spawn(storage::keep_writer_lock(lock, alone, stop.clone()));
        }
        WritersLock::File(file) => {
            let stopping = stop.clone();
            host.spawn(async move {
                stopping.cancelled().await;
                if let Some(sole) = alone {
                    sole.end();
                }
                drop(file);
            });
        }
    }
    let clock = Clock::skewed(config.clock_skew_millis);
    clock.sync(&pool).await?;
    host.spawn(clock.clone().keep_synced(pool.clone(), stop.clone()));
    let queue = TaskQueue::new(store.clone(), config.queue_settings(), clock, stop.clone());
    let scheduler = Scheduler::new(queue.clone(), store);
    host.spawn(scheduler.clone().run(stop.clone()));
    let mut directory = GrpcAgentDirectory::new(&config.agents_url, &config.service_credentials)
        .map_err(|error| ConfigError::new("SWARM_AGENTS_URL", &config.agents_url, error))?;
    if !config.agent_profile_ttl.is_zero() {
        let ttl = config.agent_profile_ttl;
        let cache = CacheClient::new(
            &config.cache_url,
            swarm_kit::cache_keys::AGENTS,
            PROFILE_CACHE_ENTRIES,
            ttl,
            stop.clone(),
            &config.service_credentials,
        )
        .map_err(|error| ConfigError::new("SWARM_CACHE_URL", &config.cache_url, error))?;
        directory = directory.with_cache(cache, ttl);
    }
    let dispatcher = Dispatcher::new(queue.clone(), Arc::new(directory));

    host.spawn(maintenance::run(
        queue.clone(),
        dispatcher.clone(),
        config.lease_sweep_interval,
        config.retention,
        stop.clone(),
    ));
    host.serving::<TaskServiceServer<TaskGrpc>>(Some(&pool))
        .await;
    let counted = queue.clone();
    host.refresh(move |registry| {
        let queue = counted.clone();
        async move { report_queue_depth(&queue, &registry).await }
    });
    if let swarm_kit::db::Pool::Postgres(pg) = &pool {
        let waker = queue.clone();
        host.spawn(storage::relay_task_ready(
            pg.clone(),
            move |id| waker.nudge(id),
            stop.clone(),
        ));
    }
    host.spawn(swarm_kit::statistics::keep_fresh(
        pool.clone(),
        storage::GROWING_TABLES,
        stop.clone(),
    ));

    let tasks = TaskServiceServer::new(TaskGrpc::new(queue, dispatcher, scheduler))
        .max_decoding_message_size(swarm_kit::grpc::MAX_MESSAGE_BYTES);
    let routes = host.routes().add_service(tasks);
    info!(backend = pool.backend(), "task queue ready");
    let served = host.serve(listener, routes, shutdown).await;
    pool.close().await;
    served
}

/// Sets the `swarm_tasks` gauge of every status from a count in the database.
async fn report_queue_depth(queue: &TaskQueue, registry: &Registry) {
    match queue.count_by_status().await {
        Ok(counts) => {
            for (status, count) in counts {
                #[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
                registry
                    .gauge(&names::TASKS, &[("status", status.as_str())])
                    .set(count as f64);
            }
        }
        Err(error) => tracing::debug!(%error, "cannot count tasks for metrics"),
    }
}

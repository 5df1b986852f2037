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
use std::time::Duration;

use swarm_kit::RunError;
use swarm_proto::tasks::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

pub use config::TasksConfig;

use crate::agents_client::GrpcAgentDirectory;
use crate::domain::{Dispatcher, TaskQueue};
use crate::grpc::TaskGrpc;

/// How often the database is pinged to keep the health status honest.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the tasks service on `listener` until `shutdown` resolves; then it stops accepting,
/// ends waiting claims and watches, lets in-flight calls finish and closes the database.
pub async fn run(
    listener: TcpListener,
    config: TasksConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let pool = swarm_kit::db::connect(&config.database_url, config.max_connections).await?;
    let store = storage::open(pool.clone()).await?;
    let stop = CancellationToken::new();
    let queue = TaskQueue::new(store, config.queue_settings(), stop.clone());
    let directory = GrpcAgentDirectory::new(&config.agents_url).map_err(|error| {
        swarm_kit::config::ConfigError::new("SWARM_AGENTS_URL", &config.agents_url, error)
    })?;
    let dispatcher = Dispatcher::new(queue.clone(), Arc::new(directory));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TaskServiceServer<TaskGrpc>>().await;
    let mut background = vec![
        tokio::spawn(maintenance::run(
            queue.clone(),
            dispatcher.clone(),
            config.lease_sweep_interval,
            config.retention,
            stop.clone(),
        )),
        tokio::spawn(watch_database(pool.clone(), health, stop.clone())),
    ];
    if let swarm_kit::db::Pool::Postgres(pg) = &pool {
        let waker = queue.clone();
        background.push(tokio::spawn(storage::relay_task_ready(
            pg.clone(),
            move || waker.wake_claimers(),
            stop.clone(),
        )));
    }

    let tasks = TaskServiceServer::new(TaskGrpc::new(queue, dispatcher))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(4 * 1024 * 1024);
    let routes = Routes::new(health_service).add_service(tasks);
    info!(addr = %listener.local_addr()?, backend = pool.backend(), "tasks service listening");
    let stopping = stop.clone();
    let served = swarm_kit::grpc::serve(listener, routes, async move {
        shutdown.await;
        stopping.cancel();
    })
    .await;
    stop.cancel();
    for task in background {
        let _ = task.await;
    }
    pool.close().await;
    info!("tasks service stopped");
    Ok(served?)
}

/// Marks the service `NOT_SERVING` while its database does not answer, and `SERVING` again
/// once it does.
async fn watch_database(
    pool: swarm_kit::db::Pool,
    health: HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(DATABASE_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let healthy = match tokio::time::timeout(swarm_kit::db::ACQUIRE_TIMEOUT, pool.ping()).await
        {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                warn!(%error, "database check failed");
                false
            }
            Err(_) => {
                warn!("database check timed out");
                false
            }
        };
        if healthy != serving {
            serving = healthy;
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(
                    <TaskServiceServer<TaskGrpc> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
        }
    }
}

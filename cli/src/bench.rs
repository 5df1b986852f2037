//! The load generator behind `swarm bench`: starts the whole stack in this process on free
//! ports over a given database, drives the gateway's REST API with concurrent clients for a
//! fixed time per operation, and reports throughput and latency percentiles.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::stack::{Stack, StackConfig, StackError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The database the tasks service uses.
    pub database_url: String,
    /// How long each operation is driven.
    pub duration: Duration,
    /// How many clients send requests at once.
    pub concurrency: usize,
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
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<12} {:>9} ok {:>5} failed {:>10.1} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            self.operation, self.succeeded, self.failed, self.throughput, self.p50_ms, self.p99_ms
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
}

/// Runs the create-task then get-task benchmarks and returns their figures.
pub async fn run(options: &BenchOptions) -> Result<Vec<Figures>, BenchError> {
    let stack = Stack::start(StackConfig::local(&options.database_url)).await?;
    let base = stack.gateway_url();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .tcp_nodelay(true)
        .build()?;

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
        stack.stop().await?;
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
    stack.stop().await?;
    Ok(vec![create, get])
}

/// Drives `request` from `options.concurrency` clients for `options.duration`; each call gets a
/// distinct sequence number and reports success with `Some`.
async fn measure<F, Fut>(
    operation: &'static str,
    options: &BenchOptions,
    client: &reqwest::Client,
    request: F,
) -> Figures
where
    F: Fn(reqwest::Client, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + options.duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::with_capacity(options.concurrency);
    for _ in 0..options.concurrency {
        let (client, request, counter) = (client.clone(), request.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
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
    latencies.sort_unstable();
    Figures {
        operation,
        succeeded: latencies.len() as u64,
        failed,
        throughput: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

/// Returns the `q` quantile of sorted latencies, in milliseconds (nearest rank).
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}

//! The order-and-time benchmarks: batch creation throughput (1,000 tasks a request, several
//! clients at once) and how soon a task that depends on another is handed to a waiting agent
//! once its parent completes. Both drive a stack started in this process through the gateway.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_cli::stack::{Stack, StackConfig};

use crate::api::{
    BenchError, BenchOptions, Figures, bench_client, bench_gateway, measure, percentile_ms,
};

/// Tasks in each batch request.
const BATCH: usize = 1000;

/// What the order-and-time benchmarks measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowReport {
    /// Batch requests of [`BATCH`] tasks.
    pub batches: Figures,
    /// Tasks created per second through batches.
    pub batch_tasks_per_second: f64,
    /// Parent completed → child handed to a waiting claim, median and 99th percentile, ms.
    pub handoff_p50_ms: f64,
    /// See `handoff_p50_ms`.
    pub handoff_p99_ms: f64,
    /// Parent → child hand-offs measured.
    pub handoffs: usize,
}

/// Runs both benchmarks on a fresh stack over `options.database_url`, the hand-off `rounds`
/// times.
pub async fn run(options: &BenchOptions, rounds: usize) -> Result<FlowReport, BenchError> {
    let stack = Stack::start(StackConfig {
        gateway: bench_gateway(&options.database_url),
        ..StackConfig::local(&options.database_url)
    })
    .await?;
    let measured = measure_flow(&stack, options, rounds).await;
    stack.stop().await?;
    measured
}

async fn measure_flow(
    stack: &Stack,
    options: &BenchOptions,
    rounds: usize,
) -> Result<FlowReport, BenchError> {
    let client = bench_client(options.concurrency)?;
    let base = stack.gateway_url();
    let handoffs = handoff_latencies(&client, &base, rounds).await?;
    let url = format!("{base}/api/tasks/batch");
    // One body serves every request: the load generator spends its time sending, not building.
    let tasks: Vec<Value> = (0..BATCH)
        .map(|i| json!({"title": format!("batch task {i}"), "kind": "bench", "payload": {"i": i}}))
        .collect();
    let body =
        bytes::Bytes::from(serde_json::to_vec(&json!({ "tasks": tasks })).unwrap_or_default());
    let batches = measure("batch create", options, &client, move |client, _| {
        let (url, body) = (url.clone(), body.clone());
        async move {
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            response.error_for_status().ok()?.bytes().await.ok()?;
            Some(())
        }
    })
    .await;
    Ok(FlowReport {
        batch_tasks_per_second: batches.throughput * BATCH as f64,
        batches,
        handoff_p50_ms: percentile_ms(&handoffs, 0.50),
        handoff_p99_ms: percentile_ms(&handoffs, 0.99),
        handoffs: handoffs.len(),
    })
}

/// Creates a parent and a child that depends on it, `rounds` times: one agent works the
/// parents, another waits in a long-polling claim for the children. Measures from the moment
/// the parent's completion is acknowledged to the moment the child's claim answers (zero when
/// the claim answered first). Returns the latencies, sorted.
async fn handoff_latencies(
    client: &reqwest::Client,
    base: &str,
    rounds: usize,
) -> Result<Vec<Duration>, BenchError> {
    let parent_agent = register(client, base, "bench-parents", "parent").await?;
    let child_agent = register(client, base, "bench-children", "child").await?;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let parent = post(
            client,
            base,
            "/api/tasks",
            json!({"title": format!("parent {round}"), "required_capabilities": ["parent"]}),
        )
        .await?;
        let parent_id = parent["id"].as_str().unwrap_or_default().to_owned();
        post(client, base, "/api/tasks", json!({"title": format!("child {round}"), "required_capabilities": ["child"], "depends_on": [parent_id]})).await?;
        let waiting = {
            let (client, url) = (client.clone(), format!("{base}/api/tasks/claim"));
            let body = json!({"agent_id": child_agent, "wait_seconds": 10});
            tokio::spawn(async move {
                let answer = client.post(url).json(&body).send().await;
                let answered = Instant::now();
                let claimed: Value = answer.ok()?.json().await.ok()?;
                (claimed["tasks"].as_array()?.len() == 1).then_some(answered)
            })
        };
        post(
            client,
            base,
            "/api/tasks/claim",
            json!({"agent_id": parent_agent}),
        )
        .await?;
        // Let the child's claim start waiting before the parent completes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        post(
            client,
            base,
            &format!("/api/tasks/{parent_id}/complete"),
            json!({"agent_id": parent_agent, "result": round}),
        )
        .await?;
        let completed = Instant::now();
        let answered = waiting
            .await
            .ok()
            .flatten()
            .ok_or(BenchError::NothingCreated)?;
        latencies.push(answered.saturating_duration_since(completed));
        let child: Value = client
            .get(format!(
                "{base}/api/tasks?agent_id={child_agent}&status=active&per_page=1"
            ))
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = child["items"][0]["id"].as_str() {
            post(
                client,
                base,
                &format!("/api/tasks/{id}/complete"),
                json!({"agent_id": child_agent}),
            )
            .await?;
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

async fn register(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    capability: &str,
) -> Result<String, BenchError> {
    let body = json!({"name": name, "capabilities": [capability], "max_concurrency": 100});
    let agent = post(client, base, "/api/agents", body).await?;
    Ok(agent["id"].as_str().unwrap_or_default().to_owned())
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> Result<Value, BenchError> {
    let response = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    Ok(response.error_for_status()?.json().await?)
}

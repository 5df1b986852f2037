//! The chaos scenario: `swarm up` killed with SIGKILL, again and again, while clients create
//! tasks and `swarm agent` processes work them off; each time it is started again on the same
//! ports and database. Afterwards every task a client was told was created (a 201) must be
//! completed, with its own result: none lost, none left behind, none answered with another's
//! work. A completion is accepted once per task, so a task run twice (its first run's answer
//! lost in a crash) still completes once; the scenario reports how many needed a second
//! attempt.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::processes::{Api, Layout, Stack};

/// How long every acknowledged task has to complete once the load stops.
const SETTLE: Duration = Duration::from_secs(120);
/// How many tasks are read back at once when checking.
const CHECK_CONCURRENCY: usize = 32;
/// The pause between a client's creates, so the agents keep up and the queue stays short.
const CREATE_PAUSE: Duration = Duration::from_millis(20);

/// What the scenario runs against, and how hard.
pub struct Options {
    /// The `swarm` binary.
    pub swarm: PathBuf,
    /// The database `swarm up` uses.
    pub database_url: String,
    /// How long clients create tasks.
    pub duration: Duration,
    /// How many times `swarm up` is killed while they do.
    pub kills: u32,
    /// Concurrent creating clients.
    pub clients: usize,
    /// `swarm agent` processes doing the work.
    pub agents: usize,
}

/// A task a client was told was created, with the payload it was created with.
type Owed = (String, u64);

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// The tasks acknowledged as created.
    created: Vec<Owed>,
    /// Creates that failed (while `swarm up` was down): never acknowledged, so never owed.
    refused: usize,
}

/// Runs the scenario and prints what it found; fails when an acknowledged task is lost.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut stack = Stack::start(&options.swarm, Layout::Embedded, &options.database_url, &[])
        .await
        .context("starting swarm up")?;
    let mut agents: Vec<Child> = (0..options.agents)
        .map(|n| agent(&options.swarm, &stack, n))
        .collect::<anyhow::Result<_>>()?;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..options.clients)
        .map(|client| {
            let api = Api::new(&stack.base, &stack.admin_key);
            tokio::spawn(create(api, client, Arc::clone(&tally), stop.clone()))
        })
        .collect();
    let between_kills = options.duration / (options.kills + 1);
    let mut downtimes = Vec::new();
    for _ in 0..options.kills {
        tokio::time::sleep(between_kills).await;
        downtimes.push(stack.kill_and_restart("swarm").await?);
    }
    tokio::time::sleep(between_kills).await;
    stop.cancel();
    for client in clients {
        client.await?;
    }
    let tally = Arc::try_unwrap(tally)
        .ok()
        .context("every client has stopped")?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a client panicked"))?;

    let api = Api::new(&stack.base, &stack.admin_key);
    let deadline = tokio::time::Instant::now() + SETTLE;
    let (mut pending, mut retried) = (tally.created.clone(), 0);
    while !pending.is_empty() {
        let checked: Vec<anyhow::Result<(Option<u64>, Owed)>> = stream::iter(pending)
            .map(|(id, payload)| {
                let api = api.clone();
                async move {
                    settled(&api, &id, payload)
                        .await
                        .map(|attempts| (attempts, (id, payload)))
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect()
            .await;
        pending = Vec::new();
        for outcome in checked {
            match outcome? {
                (Some(attempts), _) => retried += usize::from(attempts > 1),
                (None, task) => pending.push(task),
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} acknowledged tasks did not complete within {SETTLE:?} after the load",
                pending.len()
            );
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for agent in &mut agents {
        agent.kill().await?;
    }
    let downtime: Vec<String> = downtimes
        .iter()
        .map(|downtime| format!("{:.1} s", downtime.as_secs_f64()))
        .collect();
    println!(
        "chaos  swarm up killed {} times under load (back and healthy after {})   acknowledged {}   completed {}   lost 0   run a second time {}   creates refused while down {}",
        options.kills,
        downtime.join(", "),
        tally.created.len(),
        tally.created.len(),
        retried,
        tally.refused,
    );
    Ok(())
}

/// Starts `swarm agent` number `n` against the stack's gateway.
fn agent(swarm: &std::path::Path, stack: &Stack, n: usize) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("data/bench-logs/agent-{n}.log"))?;
    tokio::process::Command::new(swarm)
        .args([
            "agent",
            "--name",
            &format!("chaos-{n}"),
            "--concurrency",
            "16",
        ])
        .env("SWARM_URL", &stack.base)
        .env("SWARM_KEY", &stack.admin_key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting swarm agent")
}

/// Creates echo tasks until `stop`, noting each acknowledged one and each refusal.
async fn create(api: Api, client: usize, tally: Arc<Mutex<Tally>>, stop: CancellationToken) {
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        n += 1;
        let payload = (client as u64) << 32 | n;
        let body =
            json!({"title": format!("chaos {client}/{n}"), "kind": "echo", "payload": payload});
        match api.post("/api/tasks", body).await {
            Ok(task) => {
                let id = task["id"].as_str().unwrap_or_default().to_owned();
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .created
                    .push((id, payload));
            }
            Err(_) => tally.lock().unwrap_or_else(|p| p.into_inner()).refused += 1,
        }
        tokio::time::sleep(CREATE_PAUSE).await;
    }
}

/// The attempts task `id` took, once it is completed with its own payload as its result;
/// `None` while it is not finished; an error when it ended any other way, or answers with
/// another task's work.
async fn settled(api: &Api, id: &str, payload: u64) -> anyhow::Result<Option<u64>> {
    let Ok(response) = api.get(&format!("/api/tasks/{id}")).send().await else {
        return Ok(None);
    };
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        bail!("acknowledged task {id} is gone");
    }
    let task: Value = response.json().await?;
    match task["status"].as_str() {
        Some("completed") if task["result"] == json!(payload) => {
            Ok(Some(task["attempts"].as_u64().unwrap_or(0)))
        }
        Some("completed") => bail!("task {id} completed with another result: {task}"),
        Some("failed" | "cancelled") => bail!("acknowledged task {id} did not complete: {task}"),
        _ => Ok(None),
    }
}

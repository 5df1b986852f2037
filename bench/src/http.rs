//! `swarm-bench http`: the REST API as its users meet it. `swarm up` runs as a process of its
//! own over the database named, and wrk (a separate process, as users' clients are) loads the
//! gateway with a client key: reading one task, then creating tasks. Each load runs after a
//! warm-up and reports wrk's throughput and latency percentiles, the CPU the `swarm` process
//! spent per request and its resident memory. Given a peer's URL (the Python stack Swarm is
//! measured against), the same loads run against the peer too and the ratios are printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::processes::{self, Api, Layout, Stack};

/// The wrk script every load runs: the request from the environment, figures as JSON.
const LOAD_SCRIPT: &str = include_str!("../wrk/load.lua");
/// The task every create sends (the seed stack's benchmark body, less its `user_id`, which a
/// client key implies).
const CREATE_BODY: &str =
    r#"{"title":"bench task","kind":"bench","payload":{"n":1,"tags":["a","b"]},"priority":1}"#;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `swarm` binary whose `swarm up` is loaded.
    pub swarm: PathBuf,
    /// The wrk binary.
    pub wrk: PathBuf,
    /// The database `swarm up` uses.
    pub database_url: String,
    /// How long each load is measured.
    pub duration: Duration,
    /// How long each load runs, unmeasured, first.
    pub warmup: Duration,
    /// Open connections.
    pub connections: usize,
    /// wrk threads.
    pub threads: usize,
    /// A peer to load the same way (no key), for the ratios.
    pub peer: Option<String>,
}

/// One load: a request wrk repeats.
struct Load {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Option<&'static str>,
}

/// What wrk reports of one run.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Run {
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs the scenario and prints its figures.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let backend = crate::backend_name(&options.database_url).to_owned();
    let script = std::env::temp_dir().join(format!("swarm-bench-{}.lua", std::process::id()));
    std::fs::write(&script, LOAD_SCRIPT).context("writing the wrk script")?;
    let swarm = Swarm::start(&options).await?;
    let mut ours = Vec::new();
    for load in &loads(&swarm.task_id) {
        let cpu_before = processes::cpu_time(swarm.pid)?;
        let measured = wrk(&options, &script, &swarm.stack.base, load, Some(&swarm.key)).await?;
        let cpu = processes::cpu_time(swarm.pid)? - cpu_before;
        let (rss, peak) = processes::memory(swarm.pid)?;
        println!(
            "http  {backend:<9} {:<12} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   failed {}   swarm cpu {:.3} ms/req   rss {:.1} MiB (peak {:.1})   ({} connections, {} s)",
            load.name,
            measured.throughput(),
            measured.p50_ms,
            measured.p99_ms,
            measured.failed,
            cpu.as_secs_f64() * 1000.0 / measured.requests.max(1) as f64,
            processes::mib(rss),
            processes::mib(peak),
            options.connections,
            options.duration.as_secs(),
        );
        ours.push(measured);
    }
    drop(swarm);
    if let Some(peer) = &options.peer {
        let task_id = peer_task(peer).await?;
        for (load, measured) in loads(&task_id).iter().zip(&ours) {
            let theirs = wrk(&options, &script, peer, load, None).await?;
            println!(
                "http  peer      {:<12} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   failed {}   swarm/peer: {:.1}× req/s, p99 1/{:.1}",
                load.name,
                theirs.throughput(),
                theirs.p50_ms,
                theirs.p99_ms,
                theirs.failed,
                measured.throughput() / theirs.throughput(),
                theirs.p99_ms / measured.p99_ms,
            );
        }
    }
    let _ = std::fs::remove_file(&script);
    Ok(())
}

/// `swarm up` with a client key and one task of that client's to read.
struct Swarm {
    stack: Stack,
    pid: u32,
    key: String,
    task_id: String,
}

impl Swarm {
    async fn start(options: &Options) -> anyhow::Result<Self> {
        let stack =
            Stack::start(&options.swarm, Layout::Embedded, &options.database_url, &[]).await?;
        let pid = stack.pid("swarm").context("swarm up runs")?;
        let admin = Api::new(&stack.base, &stack.admin_key);
        let issued = admin
            .post(
                "/api/keys",
                json!({"name": format!("bench-{}", uuid::Uuid::new_v4().simple()), "role": "client"}),
            )
            .await?;
        let key = text(&issued, "key")?;
        let client = Api::new(&stack.base, &key);
        let task = client
            .post("/api/tasks", serde_json::from_str(CREATE_BODY)?)
            .await?;
        Ok(Self {
            task_id: text(&task, "id")?,
            stack,
            pid,
            key,
        })
    }
}

/// The loads, in the order they run: reads of task `task_id`, then creates.
fn loads(task_id: &str) -> Vec<Load> {
    vec![
        Load {
            name: "get task",
            method: "GET",
            path: format!("/api/tasks/{task_id}"),
            body: None,
        },
        Load {
            name: "create task",
            method: "POST",
            path: "/api/tasks".to_owned(),
            body: Some(CREATE_BODY),
        },
    ]
}

/// Creates a task at the peer (which takes no key) and returns its id.
async fn peer_task(peer: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{peer}/api/tasks"))
        .header("content-type", "application/json")
        .body(CREATE_BODY)
        .send()
        .await
        .with_context(|| format!("creating a task at the peer {peer}"))?;
    if !response.status().is_success() {
        bail!("the peer {peer} answered {} to a create", response.status());
    }
    text(&response.json().await?, "id")
}

/// Runs `load` against `base` with wrk, warm-up first, and returns the measured run's figures.
async fn wrk(
    options: &Options,
    script: &Path,
    base: &str,
    load: &Load,
    key: Option<&str>,
) -> anyhow::Result<Run> {
    let url = format!("{base}{}", load.path);
    let once = |seconds: Duration| {
        let mut command = Command::new(&options.wrk);
        command
            .arg(format!("-t{}", options.threads))
            .arg(format!("-c{}", options.connections))
            .arg(format!("-d{}s", seconds.as_secs().max(1)))
            .arg("-s")
            .arg(script)
            .arg(&url)
            .env("BENCH_METHOD", load.method)
            .env("BENCH_KEY", key.unwrap_or_default())
            .env("BENCH_BODY", load.body.unwrap_or_default())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        command
    };
    if !options.warmup.is_zero() {
        once(options.warmup).output().await.context("running wrk")?;
    }
    let output = once(options.duration)
        .output()
        .await
        .with_context(|| format!("running {}", options.wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("wrk printed no figures for {url}:\n{stdout}"))?;
    Ok(serde_json::from_str(figures)?)
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    Ok(value[field]
        .as_str()
        .with_context(|| format!("an answer with `{field}`: {value}"))?
        .to_owned())
}

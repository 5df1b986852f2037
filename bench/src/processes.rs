//! A Swarm deployment of separate processes for a scenario to load, over one database, with
//! the in-memory cache, an admin key of the bench's own, and no rate limit: either every role of
//! the `swarm` binary as a process of its own, or `swarm up` (every role in one process, as on a
//! laptop). Every role listens on a free local port. The processes are killed when the stack is
//! dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The roles, in the order they start.
const ROLES: [&str; 5] = ["metrics", "cache", "agents", "tasks", "gateway"];
/// How long the stack may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the roles are laid out in processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One process per role (`swarm serve <role>`).
    Separate,
    /// Every role in one `swarm up` process, registered under the name `swarm`.
    Embedded,
}

/// The running roles.
pub struct Stack {
    swarm: PathBuf,
    environment: Vec<(String, String)>,
    /// Each process's arguments, to start it again.
    commands: HashMap<&'static str, Vec<String>>,
    children: HashMap<&'static str, Child>,
    /// The gateway's base URL.
    pub base: String,
    /// An admin key.
    pub admin_key: String,
}

impl Stack {
    /// Starts the roles of `swarm` laid out as `layout` over `database_url` (with `extra`
    /// environment for all) and waits until the gateway reports every service serving. Each
    /// process's log goes to `data/bench-logs/<role>.log`.
    pub async fn start(
        swarm: &Path,
        layout: Layout,
        database_url: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let ports: HashMap<&str, u16> = ROLES
            .iter()
            .map(|role| Ok((*role, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let url = |role: &str| format!("http://127.0.0.1:{}", ports[role]);
        let addr = |role: &str| format!("127.0.0.1:{}", ports[role]);
        let admin_key = format!(
            "swarm_bench_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut environment: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.to_owned()),
            ("SWARM_TASKS_URL".into(), url("tasks")),
            ("SWARM_AGENTS_URL".into(), url("agents")),
            ("SWARM_CACHE_URL".into(), url("cache")),
            ("SWARM_METRICS_URL".into(), url("metrics")),
            (
                "SWARM_SERVICE_TOKEN".into(),
                format!("bench-{}", uuid::Uuid::new_v4()),
            ),
            ("SWARM_ADMIN_KEY".into(), admin_key.clone()),
            ("SWARM_RATE_LIMIT_PER_SECOND".into(), "0".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        environment.extend(
            extra
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone())),
        );
        let processes: Vec<(&'static str, Vec<String>)> = match layout {
            Layout::Separate => ROLES
                .iter()
                .map(|role| {
                    (
                        *role,
                        vec!["serve".into(), (*role).into(), "--addr".into(), addr(role)],
                    )
                })
                .collect(),
            Layout::Embedded => {
                let mut args = vec!["up".to_owned()];
                for role in ROLES {
                    args.extend([format!("--{role}-addr"), addr(role)]);
                }
                vec![("swarm", args)]
            }
        };
        let names: Vec<&'static str> = processes.iter().map(|(name, _)| *name).collect();
        let mut stack = Self {
            swarm: swarm.to_owned(),
            environment,
            commands: processes.into_iter().collect(),
            children: HashMap::new(),
            base: url("gateway"),
            admin_key,
        };
        for name in names {
            stack.spawn(name)?;
        }
        stack.wait_healthy().await?;
        Ok(stack)
    }

    /// Starts process `name` with its command, its log going to `data/bench-logs/<name>.log`
    /// (appended to, so a restart keeps what the killed process wrote).
    fn spawn(&mut self, name: &'static str) -> anyhow::Result<()> {
        let logs = PathBuf::from("data/bench-logs");
        std::fs::create_dir_all(&logs).context("creating data/bench-logs")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.log")))?;
        let args = &self.commands[name];
        let child = Command::new(&self.swarm)
            .args(args)
            .envs(self.environment.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", self.swarm.display(), args.join(" ")))?;
        self.children.insert(name, child);
        Ok(())
    }

    /// Kills process `name` with SIGKILL (no drain, no goodbye), starts it again on the same
    /// ports and waits until the stack reports healthy; returns how long that took.
    pub async fn kill_and_restart(&mut self, name: &'static str) -> anyhow::Result<Duration> {
        let killed_at = tokio::time::Instant::now();
        if let Some(mut child) = self.children.remove(name) {
            child.kill().await?;
        }
        self.spawn(name)?;
        self.wait_healthy().await?;
        Ok(killed_at.elapsed())
    }

    /// Returns the process id of `role` (`swarm` for the embedded layout).
    pub fn pid(&self, role: &str) -> Option<u32> {
        self.children.get(role)?.id()
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = http.get(format!("{}/health", self.base)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the stack did not report healthy within {START_TIMEOUT:?}; see data/bench-logs/"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A REST client of the gateway with one key.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    /// Calls the gateway at `base` with `key`.
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            key: key.to_owned(),
        }
    }

    /// A GET of `path` with the key, to send.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Posts `body` to `path` and returns the answer, or why it was refused.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {body}");
        }
        Ok(body)
    }
}

/// Returns a port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `bytes` in MiB, for reports.
#[allow(clippy::cast_precision_loss)] // memory stays far below 2^53 bytes
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Reads a process's resident memory now and at its peak, in bytes, from `/proc`.
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("/proc/{pid}/status has no {name}"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("a memory figure")?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Reads the CPU time a process has used so far, from `/proc` (in the kernel's user ticks,
/// 100 per second on Linux).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a process status line")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

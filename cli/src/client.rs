//! `swarm task`, `swarm agents` and `swarm health`: the REST API from a terminal. Answers print
//! as tables that fit the terminal or as the API's JSON (`--output json`, for `jq`); `swarm task
//! watch` follows a task's event stream with a progress bar and exits 0 when it completes, 1
//! when it fails or is cancelled.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{ContentArrangement, Table, presets};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Where the gateway is and how to answer.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The gateway.
    #[arg(long, env = "SWARM_URL", default_value = swarm_kit::config::defaults::GATEWAY_URL, global = true)]
    pub url: String,
    /// An API key.
    #[arg(long, env = "SWARM_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// How answers are printed.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// Where the gateway is, how to answer, and how long a call may take: what the commands that
/// call the REST API take.
#[derive(Debug, Clone, Args)]
pub struct Calls {
    /// Where the gateway is and how to answer.
    #[command(flatten)]
    pub connection: Connection,
    /// Seconds a call may take, answer included, before the command gives up on it (a task
    /// watch's event stream is bounded by its silence instead).
    #[arg(long = "timeout", value_name = "SECONDS", env = "SWARM_TIMEOUT", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub timeout_seconds: u64,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables that fit the terminal.
    Table,
    /// The API's JSON.
    Json,
}

/// `swarm task ...`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submits a task and prints it.
    Create(CreateTask),
    /// Prints one task.
    Get {
        /// The task id.
        id: String,
    },
    /// Lists tasks, newest first.
    List(ListTasks),
    /// Cancels a task.
    Cancel {
        /// The task id.
        id: String,
    },
    /// Queues a failed or cancelled task again.
    Retry {
        /// The task id.
        id: String,
    },
    /// Follows a task until it ends: exits 0 when it completes, 1 when it fails or is cancelled.
    Watch {
        /// The task id.
        id: String,
    },
}

/// What `swarm task create` submits.
#[derive(Debug, Args)]
pub struct CreateTask {
    /// 1 to 256 characters.
    #[arg(long)]
    title: String,
    /// What sort of work it is.
    #[arg(long)]
    kind: Option<String>,
    /// The input, as JSON.
    #[arg(long)]
    payload: Option<String>,
    /// 0 to 9, higher first.
    #[arg(long)]
    priority: Option<i32>,
    /// A capability the claiming agent must have (repeatable).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Seconds from now until it may start.
    #[arg(long)]
    delay_seconds: Option<u32>,
    /// A task that must complete first (repeatable).
    #[arg(long = "depends-on")]
    depends_on: Vec<String>,
}

/// What `swarm task list` filters.
#[derive(Debug, Args)]
pub struct ListTasks {
    /// Only this status.
    #[arg(long)]
    status: Option<String>,
    /// Only this kind.
    #[arg(long)]
    kind: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

/// Which page of a list to show.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// From 1.
    #[arg(long, default_value_t = 1)]
    page: u32,
    /// 1 to 100.
    #[arg(long, default_value_t = 20)]
    per_page: u32,
}

impl PageArgs {
    /// The list's query: the page, then each filter given.
    fn query(
        &self,
        filters: impl IntoIterator<Item = (&'static str, Option<String>)>,
    ) -> Vec<(&'static str, String)> {
        let given = filters
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)));
        [
            ("page", self.page.to_string()),
            ("per_page", self.per_page.to_string()),
        ]
        .into_iter()
        .chain(given)
        .collect()
    }
}

/// `swarm agents ...`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Lists agents.
    List {
        /// Only agents in this status (idle, busy or offline).
        #[arg(long)]
        status: Option<String>,
        /// Only agents with this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Which page.
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached or answered nonsense.
    #[error("cannot reach the gateway: {0}")]
    Transport(#[from] reqwest::Error),
    /// The gateway did not answer a call within its timeout.
    #[error("the gateway did not answer within {} s (--timeout)", .0.as_secs())]
    TimedOut(Duration),
    /// The gateway refused.
    #[error("{status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// What it said.
        message: String,
    },
    /// The command's own input is wrong.
    #[error("{0}")]
    Usage(String),
    /// A task's event stream broke and could not be opened again.
    #[error("the event stream broke and did not come back ({cause}); the task was last {status}")]
    Interrupted {
        /// The task's status when last seen.
        status: String,
        /// Why the stream could not be followed.
        cause: String,
    },
    /// The terminal's input or output failed.
    #[error("stdio: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// Tells whether trying again later may succeed: the gateway was out of reach, busy or
    /// restarting (429, 502, 503, 504), or a stream broke on its side (status 0).
    fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::TimedOut(_) => true,
            Self::Refused { status, .. } => matches!(status, 0 | 429 | 502 | 503 | 504),
            Self::Usage(_) | Self::Interrupted { .. } | Self::Io(_) => false,
        }
    }
}

/// A client of the gateway.
struct Gateway {
    http: reqwest::Client,
    connection: Connection,
    call_timeout: Duration,
}

/// How long any answer, an event stream included, may stay silent: the gateway sends a
/// stream a keep-alive comment every 15 s, so a connection silent for longer is dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(45);

impl Gateway {
    fn new(calls: Calls) -> Result<Self, ClientError> {
        let Calls {
            connection,
            timeout_seconds,
        } = calls;
        let call_timeout = Duration::from_secs(timeout_seconds);
        // A call may wait out its whole timeout for its answer's first byte.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(SILENCE_TIMEOUT.max(call_timeout))
            .build()?;
        Ok(Self {
            http,
            connection,
            call_timeout,
        })
    }

    /// Starts a request to the route whose path `segments` name (each percent-encoded, and
    /// none empty, `.` or `..`, so an id cannot reach another route), under the `--url` path.
    fn request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        // The URL crate drops `.` and `..` segments: such an id would name another route.
        if let Some(bad) = segments
            .iter()
            .find(|segment| matches!(**segment, "" | "." | ".."))
        {
            return Err(ClientError::Usage(format!("{bad:?} is not an id")));
        }
        let bad_url =
            |why: String| ClientError::Usage(format!("--url {}: {why}", self.connection.url));
        let mut url = reqwest::Url::parse(&self.connection.url)
            .map_err(|error| bad_url(error.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| bad_url("not an http(s) address".into()))?
            .pop_if_empty()
            .extend(segments);
        let request = self.http.request(method, url);
        Ok(match &self.connection.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut request = self.request(method, segments)?.query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.within_timeout(async { answer(request.send().await?).await })
            .await
    }

    /// Sends what `call` sends, bounded by the call timeout (`--timeout`) from the first byte
    /// sent to the last one read.
    async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let timeout = self.call_timeout;
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(ClientError::TimedOut(timeout)))
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, segments, query, None).await
    }

    async fn post(&self, segments: &[&str], body: Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, segments, &[], Some(body))
            .await
    }
}

/// Reads an answer: its JSON, or the API's error envelope as a refusal.
async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    Err(ClientError::Refused {
        status: status.as_u16(),
        code: body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        message: body["error"]["message"].as_str().unwrap_or("").to_owned(),
    })
}

/// Runs `swarm task ...`.
pub async fn task(command: TaskCommand, calls: Calls) -> Result<ExitCode, ClientError> {
    let output = calls.connection.output;
    let gateway = Gateway::new(calls)?;
    let task = match command {
        TaskCommand::Create(create) => gateway.post(&["api", "tasks"], creation(create)?).await?,
        TaskCommand::Get { id } => gateway.get(&["api", "tasks", &id], &[]).await?,
        TaskCommand::Cancel { id } => {
            gateway
                .post(&["api", "tasks", &id, "cancel"], json!({}))
                .await?
        }
        TaskCommand::Retry { id } => {
            gateway
                .post(&["api", "tasks", &id, "retry"], json!({}))
                .await?
        }
        TaskCommand::List(list) => {
            let query = list
                .page
                .query([("status", list.status), ("kind", list.kind)]);
            let page = gateway.get(&["api", "tasks"], &query).await?;
            print_page(&page, output, &TASK_COLUMNS);
            return Ok(ExitCode::SUCCESS);
        }
        TaskCommand::Watch { id } => return watch(&gateway, &id, output).await,
    };
    print_object(&task, output);
    Ok(ExitCode::SUCCESS)
}

/// Turns `swarm task create`'s flags into the API's body.
fn creation(create: CreateTask) -> Result<Value, ClientError> {
    let mut body = json!({"title": create.title});
    if let Some(payload) = create.payload {
        let payload: Value = serde_json::from_str(&payload)
            .map_err(|error| ClientError::Usage(format!("--payload is not json: {error}")))?;
        body["payload"] = payload;
    }
    for (name, value) in [
        ("kind", create.kind.map(Value::from)),
        ("priority", create.priority.map(Value::from)),
        ("delay_seconds", create.delay_seconds.map(Value::from)),
        (
            "required_capabilities",
            (!create.capabilities.is_empty()).then(|| create.capabilities.into()),
        ),
        (
            "depends_on",
            (!create.depends_on.is_empty()).then(|| create.depends_on.into()),
        ),
    ] {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    Ok(body)
}

/// The statuses a task ends in: a watch ends after one.
const FINAL_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];
/// How long a watch keeps reconnecting to an event stream that broke before the task ended
/// (a gateway restarting, a dropped connection) without getting an event.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// The pause between two reconnections.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Follows a task's events until it ends, drawing its progress; a stream that breaks before
/// the task ended is opened again (the first event of each is the task's current state).
async fn watch(gateway: &Gateway, id: &str, output: Output) -> Result<ExitCode, ClientError> {
    let bar = (output == Output::Table).then(|| {
        let bar = ProgressBar::new(100);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut last = Value::Null;
    let mut seen = 0;
    let mut broken_since = None;
    let mut cause = "the stream ended".to_owned();
    let status = loop {
        let seen_before = seen;
        let followed = follow(gateway, id, bar.as_ref(), &mut last, &mut seen).await;
        let status = last["status"].as_str().unwrap_or("unknown").to_owned();
        if seen > seen_before {
            broken_since = None;
        }
        match followed {
            _ if FINAL_STATUSES.contains(&status.as_str()) => break status,
            Ok(()) => {}
            // Once the watch has begun, a gateway restarting or overloaded is waited out; a
            // first attempt that fails says so at once (a wrong URL, a key refused).
            Err(error) if error.is_transient() && !last.is_null() => cause = error.to_string(),
            Err(error) => return Err(error),
        }
        if broken_since.get_or_insert_with(Instant::now).elapsed() > RECONNECT_FOR {
            return Err(ClientError::Interrupted { status, cause });
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    };
    if let Some(bar) = bar {
        if bar.is_hidden() {
            // Not a terminal (a pipe, a log): the bar draws nothing, so say how it ended.
            println!("{id} {status}");
        }
        bar.finish_with_message(status.clone());
    }
    Ok(if status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads one event stream of task `id` until it ends, drawing each change on `bar` (or
/// printing it), keeping the latest in `last` and counting them in `seen`.
async fn follow(
    gateway: &Gateway,
    id: &str,
    bar: Option<&ProgressBar>,
    last: &mut Value,
    seen: &mut u64,
) -> Result<(), ClientError> {
    let response = gateway
        .request(reqwest::Method::GET, &["api", "tasks", id, "events"])?
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(answer(response)
            .await
            .err()
            .unwrap_or(ClientError::Usage("no events".into())));
    }
    let mut events = response.bytes_stream().eventsource();
    while let Some(Ok(event)) = events.next().await {
        let Ok(task) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        if event.event == "error" {
            // The watch broke on the gateway's side (a service out of reach).
            return Err(ClientError::Refused {
                status: 0,
                code: task["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                message: task["error"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        match bar {
            Some(bar) => {
                bar.set_position(task["progress"]["percent"].as_u64().unwrap_or(0));
                let status = task["status"].as_str().unwrap_or("?");
                let note = task["progress"]["message"].as_str().unwrap_or("");
                bar.set_message(format!("{status} {note}"));
            }
            None => println!("{task}"),
        }
        *last = task;
        *seen += 1;
    }
    Ok(())
}

/// Runs `swarm agents ...`.
pub async fn agents(command: AgentsCommand, calls: Calls) -> Result<ExitCode, ClientError> {
    let output = calls.connection.output;
    let gateway = Gateway::new(calls)?;
    let AgentsCommand::List {
        status,
        capability,
        page,
    } = command;
    let query = page.query([("status", status), ("capability", capability)]);
    print_page(
        &gateway.get(&["api", "agents"], &query).await?,
        output,
        &AGENT_COLUMNS,
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `swarm health`: exits 0 while every service answers.
pub async fn health(calls: Calls) -> Result<ExitCode, ClientError> {
    let output = calls.connection.output;
    let gateway = Gateway::new(calls)?;
    let request = gateway.request(reqwest::Method::GET, &["health"])?;
    let (healthy, health) = gateway
        .within_timeout(async {
            let response = request.send().await?;
            let healthy = response.status().is_success();
            Ok((healthy, response.json().await.unwrap_or(Value::Null)))
        })
        .await?;
    print_object(&health, output);
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The columns of a task list: header and field.
const TASK_COLUMNS: [(&str, &str); 7] = [
    ("ID", "id"),
    ("TITLE", "title"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("PROGRESS", "progress"),
    ("ATTEMPTS", "attempts"),
    ("CREATED", "created_at"),
];

/// The columns of an agent list.
const AGENT_COLUMNS: [(&str, &str); 6] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("ACTIVE", "active_tasks"),
    ("CONCURRENCY", "max_concurrency"),
    ("CAPABILITIES", "capabilities"),
];

fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table
}

/// Renders one field for a table cell.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(object) if object.contains_key("percent") => {
            format!("{}%", object["percent"])
        }
        other => other.to_string(),
    }
}

fn print_object(object: &Value, output: Output) {
    match (output, object.as_object()) {
        (Output::Table, Some(fields)) => {
            let mut table = table();
            for (name, value) in fields {
                table.add_row(vec![name.clone(), cell(value)]);
            }
            println!("{table}");
        }
        _ => println!(
            "{}",
            serde_json::to_string_pretty(object).unwrap_or_default()
        ),
    }
}

fn print_page(page: &Value, output: Output, columns: &[(&str, &str)]) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(page).unwrap_or_default());
        return;
    }
    let mut table = table();
    table.set_header(
        columns
            .iter()
            .map(|(header, _)| *header)
            .collect::<Vec<_>>(),
    );
    for item in page["items"].as_array().into_iter().flatten() {
        table.add_row(
            columns
                .iter()
                .map(|(_, field)| cell(&item[*field]))
                .collect::<Vec<_>>(),
        );
    }
    println!("{table}");
    println!(
        "page {} of {} ({} in all)",
        page["page"], page["pages"], page["total"]
    );
}

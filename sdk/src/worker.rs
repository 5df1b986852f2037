//! The worker: joining through the gateway, background heartbeats that list held tasks, claims,
//! reports retried until acknowledged, and the run loop.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;
use swarm_proto::worker::v1 as worker_pb;
use swarm_proto::worker::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

/// How long one claim waits for work before it asks again.
const CLAIM_WAIT_SECONDS: u32 = 20;
/// How long the worker waits before claiming (or reporting) again after an error.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two tries of one report.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(8);
/// How many times a report is tried while the gateway is out of reach.
const REPORT_ATTEMPTS: u32 = 8;

/// Where a worker reaches Swarm: the gateway's address and an API key. With an agent key the
/// worker acts as that key's agent; with an admin key it registers the agent it describes.
#[derive(Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The gateway, such as `http://127.0.0.1:8080`; it answers gRPC beside REST.
    pub url: String,
    /// The API key, when the gateway checks keys.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl Gateway {
    /// The gateway `swarm up` starts by default, with `api_key`.
    pub fn local(api_key: Option<String>) -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            api_key,
        }
    }
}

/// What an agent declares when it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// A unique name.
    pub name: String,
    /// What sort of worker it is.
    pub kind: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// Its config object.
    pub config: Value,
    /// The most tasks it runs at once.
    pub max_concurrency: u32,
    /// How often it sends a heartbeat; keep it well under the service's agent TTL.
    pub heartbeat_every: Duration,
}

impl AgentSpec {
    /// Describes an agent named `name`: no capabilities, one task at a time, a heartbeat every
    /// five seconds.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: "sdk".to_owned(),
            capabilities: Vec::new(),
            config: Value::Object(serde_json::Map::new()),
            max_concurrency: 1,
            heartbeat_every: Duration::from_secs(5),
        }
    }

    /// Adds a capability.
    #[must_use]
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }

    /// Sets how many tasks the agent runs at once (at least 1).
    #[must_use]
    pub fn max_concurrency(mut self, max_concurrency: u32) -> Self {
        self.max_concurrency = max_concurrency.max(1);
        self
    }

    /// Sets the heartbeat period.
    #[must_use]
    pub fn heartbeat_every(mut self, period: Duration) -> Self {
        self.heartbeat_every = period;
        self
    }
}

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// A service URL is malformed.
    #[error("invalid service url: {0}")]
    Url(#[from] tonic::transport::Error),
    /// A service refused or failed the call.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A setting cannot be used.
    #[error("{0}")]
    Invalid(String),
}

impl SdkError {
    /// Tells whether retrying later may succeed (the service was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Status(status) if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::ResourceExhausted
            )
        )
    }
}

/// How a handler says a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// A failure another attempt may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A task handed to this agent under a lease.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The task id.
    pub id: String,
    /// The task's title.
    pub title: String,
    /// What sort of work it is.
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// Which attempt this is, from 1.
    pub attempt: i32,
    /// The lease of this attempt.
    pub lease_id: String,
    /// The agent holding it.
    pub agent_id: String,
    gateway: WorkerServiceClient<GatewayChannel>,
}

impl Assignment {
    fn lease(&self) -> tasks_pb::LeaseRef {
        tasks_pb::LeaseRef {
            agent_id: self.agent_id.clone(),
            lease_id: Some(self.lease_id.clone()),
        }
    }

    /// Reports progress (0 to 100) and renews the lease.
    pub async fn progress(&self, percent: i32, message: Option<&str>) -> Result<(), SdkError> {
        let request = tasks_pb::ReportProgressRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            percent,
            message: message.map(str::to_owned),
        };
        self.gateway.clone().report_progress(request).await?;
        Ok(())
    }

    /// Completes the task with a result.
    pub async fn complete(&self, result: &Value) -> Result<(), SdkError> {
        let request = tasks_pb::CompleteTaskRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            result_json: result.to_string(),
        };
        self.gateway.clone().complete_task(request).await?;
        Ok(())
    }

    /// Fails the task; it is retried later if the failure is retryable and attempts remain.
    pub async fn fail(&self, failure: &Failure) -> Result<(), SdkError> {
        let request = tasks_pb::FailTaskRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            error: failure.message.clone(),
            retryable: Some(failure.retryable),
        };
        self.gateway.clone().fail_task(request).await?;
        Ok(())
    }

    /// Reports a handler's outcome, retrying with a jittered backoff while the gateway is out
    /// of reach (a repeated report whose first answer was lost gets the same answer). A refused
    /// report means the lease was lost (expired or taken back): the task belongs to another
    /// attempt now, and this outcome does not count.
    async fn report(&self, outcome: Result<Value, Failure>) {
        let mut pause = RETRY_PAUSE;
        for attempt in 1..=REPORT_ATTEMPTS {
            let reported = match &outcome {
                Ok(result) => self.complete(result).await,
                Err(failure) => self.fail(failure).await,
            };
            match reported {
                Ok(()) => {
                    debug!(task_id = %self.id, "outcome reported");
                    return;
                }
                Err(error) if error.is_transient() && attempt < REPORT_ATTEMPTS => {
                    warn!(task_id = %self.id, %error, attempt, "outcome not acknowledged; retrying");
                    tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => {
                    warn!(task_id = %self.id, %error, "outcome refused");
                    return;
                }
            }
        }
    }
}

/// A registered agent.
#[derive(Debug)]
pub struct Worker {
    id: String,
    max_concurrency: u32,
    gateway: WorkerServiceClient<GatewayChannel>,
    held: HeldTasks,
    heartbeat: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The ids of the tasks a worker is running, which its heartbeats list.
type HeldTasks = Arc<Mutex<HashSet<String>>>;

/// A channel to the gateway whose calls carry the API key, if any.
type GatewayChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Debug, Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        Ok(request)
    }
}

fn channel(gateway: &Gateway) -> Result<GatewayChannel, SdkError> {
    let endpoint = Endpoint::from_shared(gateway.url.clone())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    let bearer = gateway
        .api_key
        .as_deref()
        .map(|key| {
            let mut value = MetadataValue::try_from(format!("Bearer {key}"))?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
        .map_err(|_: tonic::metadata::errors::InvalidMetadataValue| {
            SdkError::Invalid("the api key must be visible ascii".into())
        })?;
    Ok(InterceptedService::new(endpoint, Bearer(bearer)))
}

impl Worker {
    /// Joins Swarm through the gateway and starts the heartbeats: with an agent key, as the
    /// key's agent; with an admin key, as the agent `spec.name`, registered unless it exists.
    /// Either way the agent's kind, capabilities and concurrency become `spec`'s.
    pub async fn register(gateway: &Gateway, spec: AgentSpec) -> Result<Self, SdkError> {
        let mut client = WorkerServiceClient::new(channel(gateway)?);
        let agent = client
            .join(agents_pb::RegisterAgentRequest {
                name: spec.name,
                kind: spec.kind,
                capabilities: spec.capabilities,
                config_json: spec.config.to_string(),
                max_concurrency: Some(i32::try_from(spec.max_concurrency).unwrap_or(i32::MAX)),
                resume: true,
            })
            .await?
            .into_inner();
        let held = HeldTasks::default();
        let heartbeat = tokio::spawn(beat(
            client.clone(),
            agent.id.clone(),
            Arc::clone(&held),
            spec.heartbeat_every,
        ));
        Ok(Self {
            id: agent.id,
            max_concurrency: spec.max_concurrency,
            gateway: client,
            held,
            heartbeat,
        })
    }

    /// Returns the agent id the registry gave.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims up to `max_tasks` tasks, waiting up to `wait_seconds` (at most 60) for work.
    pub async fn claim(
        &self,
        max_tasks: u32,
        wait_seconds: u32,
    ) -> Result<Vec<Assignment>, SdkError> {
        let request = tasks_pb::ClaimTasksRequest {
            agent_id: self.id.clone(),
            max_tasks,
            wait_seconds,
        };
        let tasks = self
            .gateway
            .clone()
            .claim_tasks(request)
            .await?
            .into_inner()
            .tasks;
        Ok(tasks
            .into_iter()
            .map(|task| self.assignment(task))
            .collect())
    }

    fn assignment(&self, task: tasks_pb::Task) -> Assignment {
        Assignment {
            payload: serde_json::from_str(&task.payload_json).unwrap_or(Value::Null),
            id: task.id,
            title: task.title,
            kind: task.kind,
            attempt: task.attempts,
            lease_id: task.lease_id.unwrap_or_default(),
            agent_id: self.id.clone(),
            gateway: self.gateway.clone(),
        }
    }

    /// Receives tasks until `shutdown` resolves and runs `handler` on each, at most
    /// `max_concurrency` at once, reporting each outcome. Transient service errors are retried;
    /// at shutdown it stops claiming and waits for running handlers to report.
    pub async fn run<H, Fut>(
        &self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SdkError>
    where
        H: Fn(Assignment) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(self.max_concurrency as usize));
        let mut running = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let outcome = loop {
            // Wait for a free slot, then ask for as many tasks as there are free slots.
            let mut permits = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Ok(()),
                },
                () = &mut shutdown => break Ok(()),
            };
            let more = u32::try_from(slots.available_permits()).unwrap_or(0);
            if let Ok(extra) = slots.clone().try_acquire_many_owned(more) {
                permits.merge(extra);
            }
            let claimed = tokio::select! {
                claimed = self.claim(u32::try_from(permits.num_permits()).unwrap_or(1), CLAIM_WAIT_SECONDS) => claimed,
                () = &mut shutdown => break Ok(()),
            };
            match claimed {
                Ok(assignments) => {
                    for assignment in assignments {
                        let Some(permit) = permits.split(1) else {
                            break;
                        };
                        let handler = handler.clone();
                        let held = Arc::clone(&self.held);
                        lock(&held).insert(assignment.id.clone());
                        running.spawn(async move {
                            let outcome = handler(assignment.clone()).await;
                            assignment.report(outcome).await;
                            lock(&held).remove(&assignment.id);
                            drop(permit);
                        });
                    }
                }
                Err(error) if error.is_transient() => {
                    warn!(%error, "claim failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(error) => break Err(error),
            }
            while running.try_join_next().is_some() {}
        };
        while running.join_next().await.is_some() {}
        outcome
    }
}

/// Locks the held-task set (a panicked holder left it usable: it holds plain ids).
fn lock(held: &HeldTasks) -> std::sync::MutexGuard<'_, HashSet<String>> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends a heartbeat listing the held tasks every `period` until aborted; failures are logged
/// and retried at the next beat.
async fn beat(
    mut gateway: WorkerServiceClient<GatewayChannel>,
    id: String,
    held: HeldTasks,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await; // joining counted as the first
    loop {
        tick.tick().await;
        let ids = lock(&held).iter().cloned().collect();
        let request = worker_pb::HeartbeatRequest {
            agent_id: id.clone(),
            active_tasks: Some(worker_pb::HeldTasks { ids }),
        };
        match gateway.heartbeat(request).await {
            Ok(answer) => {
                for task_id in answer.into_inner().cancel {
                    warn!(agent_id = %id, %task_id, "a held task was cancelled");
                }
            }
            Err(status) => warn!(agent_id = %id, code = ?status.code(), "heartbeat failed"),
        }
    }
}

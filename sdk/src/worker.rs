//! The worker: joining through the gateway, background heartbeats that list held tasks (renewing
//! their leases and raising the cancellation signal of those no longer held), claims, reports
//! retried until acknowledged, and the run loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use swarm_proto::agents::v1 as agents_pb;
use swarm_proto::tasks::v1 as tasks_pb;
use swarm_proto::worker::v1 as worker_pb;
use swarm_proto::worker::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

/// How long one claim waits for work before it asks again.
const CLAIM_WAIT_SECONDS: u32 = 20;
/// The most tasks one claim may ask for: the contract's bound on `max_tasks` (the queue
/// refuses more). A worker with more free slots fills the rest with its next claims.
const MAX_CLAIM: u32 = 100;
/// How long the worker waits before claiming (or reporting) again after an error.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two tries of one report.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(8);
/// How long a stopping worker keeps trying a report the gateway does not acknowledge, when the
/// lease is longer: it does not hold its shutdown for a whole lease.
const STOPPING_REPORT_PATIENCE: Duration = Duration::from_secs(30);
/// The longest pause between heartbeats while the worker holds tasks: a cancellation reaches
/// the handler within about this long.
const BUSY_HEARTBEAT: Duration = Duration::from_secs(1);
/// The shortest period of the connection's pings.
const MIN_PING_PERIOD: Duration = Duration::from_secs(1);
/// The shortest wait for the answer to a ping, or to a heartbeat, before it is given up: long
/// enough for a busy gateway, short enough to act well within the agent's TTL (30 s by default).
const MIN_ANSWER_WAIT: Duration = Duration::from_secs(5);

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
    /// How long a stopping worker lets running handlers finish before it fails their attempts
    /// (see [`Worker::run`]).
    pub grace_period: Duration,
}

impl AgentSpec {
    /// Describes an agent named `name`: no capabilities, one task at a time, a heartbeat every
    /// five seconds, 30 s of grace for running handlers when it stops.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: "sdk".to_owned(),
            capabilities: Vec::new(),
            config: Value::Object(serde_json::Map::new()),
            max_concurrency: 1,
            heartbeat_every: Duration::from_secs(5),
            grace_period: Duration::from_secs(30),
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

    /// Sets how long a stopping worker lets running handlers finish.
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
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
    /// Tells whether retrying later may succeed: the service was unreachable or busy, or the
    /// connection to it broke before it answered (a gateway restarting), which tonic reports
    /// as `unknown` with the transport's error as the cause.
    pub fn is_transient(&self) -> bool {
        let Self::Status(status) = self else {
            return false;
        };
        match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::ResourceExhausted => true,
            tonic::Code::Unknown => std::error::Error::source(status)
                .is_some_and(|cause| cause.is::<tonic::transport::Error>()),
            _ => false,
        }
    }

    /// Tells whether a claim refused this way will be refused again however long the worker
    /// waits: its key is unknown or may not act for the agent, the request is invalid, or the
    /// agent is gone. Any other failure (the gateway out of reach or failing unexpectedly, the
    /// agent offline until its next heartbeat) is worth claiming again after a pause.
    pub fn ends_the_worker(&self) -> bool {
        let Self::Status(status) = self else {
            return true;
        };
        matches!(
            status.code(),
            tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::NotFound
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
    /// Seconds its lease lasts unless renewed.
    pub timeout_seconds: i32,
    gateway: WorkerServiceClient<GatewayChannel>,
    cancel: CancellationToken,
}

impl Assignment {
    fn lease(&self) -> tasks_pb::LeaseRef {
        tasks_pb::LeaseRef {
            agent_id: self.agent_id.clone(),
            lease_id: Some(self.lease_id.clone()),
        }
    }

    /// Tells whether the task was cancelled, or is no longer this agent's to finish (it timed
    /// out or was taken back): its outcome will not count.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once [`Assignment::is_cancelled`] turns true. A worker running
    /// [`Worker::run`] learns of it from its next heartbeat, within about a second.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Reports progress (0 to 100) and renews the lease.
    pub async fn progress(&self, percent: i32, message: Option<&str>) -> Result<(), SdkError> {
        let request = tasks_pb::ReportProgressRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            percent,
            message: message.map(str::to_owned),
        };
        self.refused_means_lost(self.gateway.clone().report_progress(request).await)?;
        Ok(())
    }

    /// Raises the cancellation signal when the service refuses a report because the attempt
    /// is no longer this agent's.
    fn refused_means_lost<T>(&self, answer: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        if let Err(status) = &answer
            && matches!(
                status.code(),
                tonic::Code::FailedPrecondition | tonic::Code::NotFound
            )
        {
            self.cancel.cancel();
        }
        answer
    }

    fn completion(&self, result: &Value) -> tasks_pb::CompleteTaskRequest {
        tasks_pb::CompleteTaskRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            result_json: result.to_string(),
        }
    }

    fn failure(&self, failure: &Failure) -> tasks_pb::FailTaskRequest {
        tasks_pb::FailTaskRequest {
            id: self.id.clone(),
            lease: Some(self.lease()),
            error: failure.message.clone(),
            retryable: Some(failure.retryable),
        }
    }

    /// Completes the task with a result.
    pub async fn complete(&self, result: &Value) -> Result<(), SdkError> {
        let request = self.completion(result);
        self.refused_means_lost(self.gateway.clone().complete_task(request).await)?;
        Ok(())
    }

    /// Fails the task; it is retried later if the failure is retryable and attempts remain.
    pub async fn fail(&self, failure: &Failure) -> Result<(), SdkError> {
        let request = self.failure(failure);
        self.refused_means_lost(self.gateway.clone().fail_task(request).await)?;
        Ok(())
    }

    /// Completes the task (`Ok`) or fails it (`Err`), and in the same call claims up to
    /// `claim_next` more tasks for the agent, without waiting: returns those it got.
    pub async fn finish(
        &self,
        outcome: &Result<Value, Failure>,
        claim_next: u32,
    ) -> Result<Vec<Assignment>, SdkError> {
        use tasks_pb::finish_task_request::Outcome;
        let outcome = match outcome {
            Ok(result) => Outcome::Complete(self.completion(result)),
            Err(failure) => Outcome::Fail(self.failure(failure)),
        };
        let request = tasks_pb::FinishTaskRequest {
            outcome: Some(outcome),
            claim_next,
        };
        let answer = self.refused_means_lost(self.gateway.clone().finish_task(request).await)?;
        Ok(answer
            .into_inner()
            .claimed
            .into_iter()
            .map(|task| assignment(task, &self.agent_id, &self.gateway))
            .collect())
    }

    /// Reports a handler's outcome and claims up to `claim_next` more tasks in the same call,
    /// retrying with a jittered backoff while the gateway is out of reach (a repeated report
    /// whose first answer was lost gets the same answer). Only the first try claims: tasks a
    /// lost answer carried are not claimed twice over, and the queue takes them back within a
    /// heartbeat or so. It keeps trying for a whole lease (`timeout_seconds`) after the first
    /// failure: the outcome counts for as long as the lease may still be held, and once a
    /// lease has passed without an acknowledgement the queue runs the task again. Once the
    /// worker is `stopping`, it tries for at most [`STOPPING_REPORT_PATIENCE`]. A refused
    /// report means the lease was lost (expired or taken back): the task belongs to another
    /// attempt now, and this outcome does not count. Returns the tasks claimed.
    async fn report(
        &self,
        outcome: Result<Value, Failure>,
        claim_next: u32,
        stopping: &CancellationToken,
    ) -> Vec<Assignment> {
        let lease = Duration::from_secs(u64::try_from(self.timeout_seconds).unwrap_or(0));
        let patience = || {
            if stopping.is_cancelled() {
                lease.min(STOPPING_REPORT_PATIENCE)
            } else {
                lease
            }
        };
        let mut pause = RETRY_PAUSE;
        let mut first_failure = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let claim_next = if attempt == 1 { claim_next } else { 0 };
            match self.finish(&outcome, claim_next).await {
                Ok(claimed) => {
                    debug!(task_id = %self.id, claimed = claimed.len(), "outcome reported");
                    return claimed;
                }
                Err(error)
                    if error.is_transient()
                        && first_failure.get_or_insert_with(Instant::now).elapsed()
                            < patience() =>
                {
                    warn!(task_id = %self.id, %error, attempt, "outcome not acknowledged; retrying");
                    tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => {
                    warn!(task_id = %self.id, %error, attempt, "outcome refused or not acknowledged within a lease");
                    return Vec::new();
                }
            }
        }
    }
}

/// Turns a task claimed for agent `agent_id` into an assignment that reports through `gateway`.
fn assignment(
    task: tasks_pb::Task,
    agent_id: &str,
    gateway: &WorkerServiceClient<GatewayChannel>,
) -> Assignment {
    Assignment {
        payload: serde_json::from_str(&task.payload_json).unwrap_or(Value::Null),
        id: task.id,
        title: task.title,
        kind: task.kind,
        attempt: task.attempts,
        lease_id: task.lease_id.unwrap_or_default(),
        agent_id: agent_id.to_owned(),
        timeout_seconds: task.timeout_seconds,
        gateway: gateway.clone(),
        cancel: CancellationToken::new(),
    }
}

/// A registered agent.
#[derive(Debug)]
pub struct Worker {
    id: String,
    max_concurrency: u32,
    grace_period: Duration,
    gateway: WorkerServiceClient<GatewayChannel>,
    held: HeldTasks,
    heartbeat: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The tasks a worker is running, which its heartbeats list.
type HeldTasks = Arc<Held>;

/// The tasks a worker is running, by id (each one's cancellation signal and lease length), and
/// a wake-up for the heartbeat, which beats faster while there are any.
#[derive(Debug, Default)]
struct Held {
    tasks: Mutex<HashMap<String, (CancellationToken, i32)>>,
    taken: tokio::sync::Notify,
    /// The pause the heartbeat is waiting out, in milliseconds.
    waiting_ms: AtomicU64,
}

impl Held {
    /// Locks the map (a panicked holder left it usable: it holds plain values).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (CancellationToken, i32)>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a task the worker starts on, and wakes the heartbeat when the task's lease asks
    /// for a shorter pause than the one it is waiting out.
    fn take(&self, assignment: &Assignment) {
        // The pause is read under the lock that `heartbeat_pause` notes it under, so the
        // heartbeat either sees this task or its pause is the one compared here.
        let waiting_ms = {
            let mut tasks = self.lock();
            tasks.insert(
                assignment.id.clone(),
                (assignment.cancel.clone(), assignment.timeout_seconds),
            );
            self.waiting_ms.load(Ordering::Relaxed)
        };
        if busy_pause(assignment.timeout_seconds).as_millis() < u128::from(waiting_ms) {
            self.taken.notify_one();
        }
    }

    /// How long the heartbeat waits: `period` while idle, and while it holds tasks at most
    /// [`BUSY_HEARTBEAT`] and a third of the shortest lease, so leases never lapse under a
    /// handler that does not report. Notes it as the pause being waited out.
    fn heartbeat_pause(&self, period: Duration) -> Duration {
        let tasks = self.lock();
        let shortest_lease = tasks.values().map(|(_, lease)| *lease).min();
        let pause = shortest_lease.map_or(period, |seconds| period.min(busy_pause(seconds)));
        let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.waiting_ms.store(millis, Ordering::Relaxed);
        pause
    }
}

/// The heartbeat's longest pause while it holds a task whose lease lasts `lease_seconds`.
fn busy_pause(lease_seconds: i32) -> Duration {
    let third = Duration::from_millis(u64::try_from(lease_seconds).unwrap_or(1) * 1000 / 3);
    BUSY_HEARTBEAT.min(third)
}

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

/// Opens the worker's channel to `gateway`. The connection is pinged every heartbeat period
/// (`heartbeat_every`) and dropped when a ping goes unanswered for [`MIN_ANSWER_WAIT`] or a
/// period, whichever is longer, so a connection that went silent (a peer or a middlebox gone
/// without closing it) is replaced before the agent's heartbeats lapse, rather than holding
/// every call until the kernel notices.
fn channel(gateway: &Gateway, heartbeat_every: Duration) -> Result<GatewayChannel, SdkError> {
    let endpoint = Endpoint::from_shared(gateway.url.clone())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(heartbeat_every.max(MIN_PING_PERIOD))
        .keep_alive_timeout(heartbeat_every.max(MIN_ANSWER_WAIT))
        .keep_alive_while_idle(true)
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
        let mut client = WorkerServiceClient::new(channel(gateway, spec.heartbeat_every)?);
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
            grace_period: spec.grace_period,
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
            .map(|task| assignment(task, &self.id, &self.gateway))
            .collect())
    }

    /// Receives tasks until `shutdown` resolves and runs `handler` on each, at most
    /// `max_concurrency` at once, reporting each outcome (a handler that panics fails its
    /// attempt, retryably). Each report claims the slot's next task in the same call, so a busy
    /// queue keeps the slots full without a claim of their own; a slot that gets none goes back
    /// to the claim loop, which long-polls for every free slot at once (up to 100 tasks a claim,
    /// the queue's limit). While handlers run, heartbeats renew their leases and raise each
    /// one's cancellation signal when its task is cancelled. A refused claim ends it only when
    /// waiting cannot help ([`SdkError::ends_the_worker`]); other failures are retried after a
    /// pause. At shutdown it stops claiming and gives running handlers the grace period
    /// ([`AgentSpec::grace_period`]) to finish and report (a report already on its way when the
    /// worker stops may still bring its slot one more task, which runs and reports too). Then
    /// it raises the cancellation signals of those still running, drops them, and fails their
    /// attempts as retryable (`"worker stopped before the task finished"`), so that the queue
    /// runs them again after its retry backoff rather than after their leases.
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
        let stopping = CancellationToken::new();
        let give_up = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let outcome = loop {
            // Wait for a free slot, then ask for as many tasks as there are free slots (at most
            // what one claim may take).
            let mut permits = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Ok(()),
                },
                () = &mut shutdown => break Ok(()),
            };
            let more = u32::try_from(slots.available_permits())
                .unwrap_or(u32::MAX)
                .min(MAX_CLAIM - 1);
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
                        let slot = Slot {
                            held: Arc::clone(&self.held),
                            stopping: stopping.clone(),
                            give_up: give_up.clone(),
                            _permit: permit,
                        };
                        running.spawn(slot.work(assignment, handler.clone()));
                    }
                }
                Err(error) if !error.ends_the_worker() => {
                    warn!(%error, "claim failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(error) => break Err(error),
            }
            while running.try_join_next().is_some() {}
        };
        stopping.cancel();
        let drained = tokio::time::timeout(self.grace_period, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                running = running.len(),
                "grace period over; failing the attempts still running"
            );
            give_up.cancel();
            while running.join_next().await.is_some() {}
        }
        outcome
    }
}

/// The error a stopping worker fails the attempts of handlers that outlasted its grace with.
const STOPPED: &str = "worker stopped before the task finished";

/// One of a worker's `max_concurrency` slots, busy for as long as its reports bring it work.
struct Slot {
    held: HeldTasks,
    /// Raised when the worker stops claiming: reports then claim nothing more.
    stopping: CancellationToken,
    /// Raised when the grace period of a stopping worker is over: a handler still running is
    /// dropped and its attempt failed.
    give_up: CancellationToken,
    /// Until the slot ends the queue counts its tasks against the agent.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    /// Runs `handler` on `assignment` and reports the outcome, claiming the next task in the
    /// same call; runs that one too, and so on, until a report brings no task.
    async fn work<H, Fut>(self, assignment: Assignment, handler: H)
    where
        H: Fn(Assignment) -> Fut,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let mut next = Some(assignment);
        while let Some(assignment) = next.take() {
            self.held.take(&assignment);
            let handling = tokio::spawn(handler(assignment.clone()));
            let dropping = handling.abort_handle();
            let outcome = tokio::select! {
                biased;
                handled = handling => {
                    handled.unwrap_or_else(|crashed| Err(Failure::transient(panicked(crashed))))
                }
                () = self.give_up.cancelled() => {
                    assignment.cancel.cancel();
                    dropping.abort();
                    Err(Failure::transient(STOPPED))
                }
            };
            let claim_next = u32::from(!self.stopping.is_cancelled());
            next = assignment
                .report(outcome, claim_next, &self.stopping)
                .await
                .into_iter()
                .next();
            self.held.lock().remove(&assignment.id);
        }
    }
}

/// Describes a handler that panicked (or was aborted), for its failure report.
fn panicked(crashed: tokio::task::JoinError) -> String {
    if !crashed.is_panic() {
        return "the handler was aborted".to_owned();
    }
    let panic = crashed.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the handler panicked: {message}")
}

/// Sends a heartbeat listing the held tasks until aborted, paced by [`Held::heartbeat_pause`]
/// (a task taken while the heartbeat waits may shorten its wait). Raises the cancellation signal
/// of each task the answer names; failures are logged and retried at the next beat. A beat
/// unanswered after two pauses (at least [`MIN_ANSWER_WAIT`]) is given up, so the next one goes
/// out on time.
async fn beat(
    mut gateway: WorkerServiceClient<GatewayChannel>,
    id: String,
    held: HeldTasks,
    period: Duration,
) {
    let mut last_beat = tokio::time::Instant::now(); // joining counted as one
    loop {
        let pause = held.heartbeat_pause(period);
        tokio::select! {
            () = tokio::time::sleep_until(last_beat + pause) => {}
            () = held.taken.notified() => continue,
        }
        last_beat = tokio::time::Instant::now();
        let ids = held.lock().keys().cloned().collect();
        let mut request = tonic::Request::new(worker_pb::HeartbeatRequest {
            agent_id: id.clone(),
            active_tasks: Some(worker_pb::HeldTasks { ids }),
        });
        // The channel enforces this deadline on its side too.
        request.set_timeout((pause * 2).max(MIN_ANSWER_WAIT));
        match gateway.heartbeat(request).await {
            Ok(answer) => {
                let held = held.lock();
                for task_id in answer.into_inner().cancel {
                    if let Some((cancel, _)) = held.get(&task_id) {
                        debug!(agent_id = %id, %task_id, "a held task is no longer ours");
                        cancel.cancel();
                    }
                }
            }
            Err(status) => warn!(agent_id = %id, code = ?status.code(), "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_broken_connection_is_worth_retrying_and_a_refusal_is_not() {
        // A real transport error: nothing listens on port 1.
        let transport = Endpoint::from_static("http://127.0.0.1:1")
            .connect()
            .await
            .unwrap_err();
        let mut broken = tonic::Status::unknown("transport error");
        broken.set_source(Arc::new(transport));
        assert!(SdkError::Status(broken).is_transient());
        assert!(SdkError::Status(tonic::Status::unavailable("restarting")).is_transient());
        assert!(!SdkError::Status(tonic::Status::unknown("a handler panicked")).is_transient());
        assert!(!SdkError::Status(tonic::Status::permission_denied("not yours")).is_transient());
    }

    #[test]
    fn only_a_refusal_that_will_not_change_ends_the_worker() {
        let ends = |status| SdkError::Status(status).ends_the_worker();
        assert!(ends(tonic::Status::unauthenticated("unknown key")));
        assert!(ends(tonic::Status::permission_denied("another agent")));
        assert!(ends(tonic::Status::invalid_argument("max_tasks")));
        assert!(ends(tonic::Status::not_found("agent deleted")));
        assert!(!ends(tonic::Status::unavailable("restarting")));
        assert!(!ends(tonic::Status::unknown("stream reset")));
        assert!(!ends(tonic::Status::internal("internal error")));
        assert!(!ends(tonic::Status::failed_precondition("agent offline")));
        assert!(SdkError::Invalid("bad key".into()).ends_the_worker());
    }
}

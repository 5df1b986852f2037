//! Shared helpers of the end-to-end tests: a whole Swarm stack on free ports over a throwaway
//! database, a REST client that speaks to its gateway, and a proxy that can go silent.

pub mod proxy;

use std::time::Duration;

use serde_json::Value;
use swarm_cli::stack::{Stack, StackConfig};
use swarm_kit::grpc::ServiceChannel;
use swarm_kit::service_auth::ServiceCredentials;
use swarm_kit::testing::{Backend, TestDatabase};
use swarm_proto::tasks::v1 as tasks_pb;
use swarm_proto::tasks::v1::task_service_client::TaskServiceClient;

/// A running stack and what talks to it. Dropping it without [`TestStack::stop`] leaves the
/// roles to die with the test's runtime.
#[derive(Debug)]
pub struct TestStack {
    /// The stack.
    pub stack: Stack,
    /// The gateway's base URL.
    pub base: String,
    /// An HTTP client that sends the stack's admin key.
    pub http: reqwest::Client,
    /// The stack's admin key.
    pub admin_key: String,
    /// The token the stack's services demand of each other.
    pub service_token: String,
    database: TestDatabase,
}

impl TestStack {
    /// Starts every role on port 0 over a fresh database of `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts every role on port 0 over a fresh database of `backend`, with settings `tune`
    /// adjusts (fast polling and metric reports every 100 ms are preset).
    pub async fn start_with(backend: Backend, tune: impl FnOnce(&mut StackConfig)) -> Self {
        let database = TestDatabase::new(backend).await;
        let mut config = StackConfig::local(database.url());
        config.tasks.poll_interval = Duration::from_millis(50);
        let report_often = Duration::from_millis(100);
        for interval in [
            &mut config.tasks.metrics.interval,
            &mut config.agents.metrics.interval,
            &mut config.cache.metrics.interval,
            &mut config.metrics.reporter.interval,
            &mut config.gateway.metrics.interval,
        ] {
            *interval = report_often;
        }
        let admin_key = format!("swarm_test_{}", uuid::Uuid::new_v4().simple());
        config.gateway.admin_key = Some(admin_key.clone());
        let service_token = uuid::Uuid::new_v4().simple().to_string();
        config.service_credentials = ServiceCredentials::new(Some(service_token.clone()));
        tune(&mut config);
        let stack = Stack::start(config).await.expect("stack starts");
        Self {
            base: stack.gateway_url(),
            stack,
            http: client_with_key(&admin_key),
            admin_key,
            service_token,
            database,
        }
    }

    /// Issues a key of `role` (`agent_id` for agent keys) through the admin route and returns
    /// a client that sends it.
    pub async fn client_for(
        &self,
        name: &str,
        role: &str,
        agent_id: Option<&str>,
    ) -> reqwest::Client {
        let (status, key) = self
            .post(
                "/api/keys",
                serde_json::json!({"name": name, "role": role, "agent_id": agent_id}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        client_with_key(key["key"].as_str().expect("the new key's secret"))
    }

    /// Returns the URL of the stack's database, for extra replicas.
    pub fn database_url(&self) -> &str {
        self.database.url()
    }

    /// Returns the full URL of a gateway path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a JSON body with `method` to `path`; returns the status and the JSON answer
    /// (`Value::Null` for an empty body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_with(&self.http, method, self.url(path), body).await
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Claims up to `max_tasks` tasks for `agent_id` over REST, without waiting; returns the
    /// tasks claimed (none when nothing it can take is queued).
    pub async fn claim(&self, agent_id: &str, max_tasks: u32) -> Vec<Value> {
        let body = serde_json::json!({"agent_id": agent_id, "max_tasks": max_tasks});
        let (status, mut claimed) = self.post("/api/tasks/claim", body).await;
        assert_eq!(status, 200, "the claim is answered: {claimed}");
        match claimed["tasks"].take() {
            Value::Array(tasks) => tasks,
            other => panic!("a claim answers a list of tasks, not {other}"),
        }
    }

    /// Registers an agent over REST and returns its id.
    pub async fn register_agent(
        &self,
        name: &str,
        capabilities: &[&str],
        max_concurrency: u32,
    ) -> String {
        let body = serde_json::json!({
            "name": name,
            "capabilities": capabilities,
            "max_concurrency": max_concurrency,
        });
        let (status, agent) = self.post("/api/agents", body).await;
        assert_eq!(status, 201, "agent registers: {agent}");
        agent["id"].as_str().expect("agent has an id").to_owned()
    }

    /// Returns a channel to the service at `url` whose calls carry the stack's service token.
    pub fn service_channel(&self, url: &str) -> ServiceChannel {
        swarm_kit::grpc::lazy_channel(
            url,
            Duration::from_secs(2),
            None,
            &ServiceCredentials::new(Some(self.service_token.clone())),
        )
        .expect("service urls are valid")
    }

    /// Returns the gateway with the stack's admin key, for SDK workers that register agents.
    pub fn gateway(&self) -> swarm_sdk::Gateway {
        swarm_sdk::Gateway {
            url: self.base.clone(),
            api_key: Some(self.admin_key.clone()),
        }
    }

    /// Polls the metrics summary (`GET /api/metrics`) until `ready` holds, for at most 15
    /// seconds, or fails with the last summary.
    pub async fn metrics_when(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (status, summary) = self.get("/api/metrics").await;
            assert_eq!(status, 200, "{summary}");
            if ready(&summary) {
                return summary;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "summary never got there: {summary:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every role and waits for them; fails the test if one stopped with an error.
    pub async fn stop(self) {
        self.stack.stop().await.expect("stack stops cleanly");
    }
}

/// The figures of `route` served by `service` in a metrics summary, if it was called.
pub fn route_figures<'a>(summary: &'a Value, service: &str, route: &str) -> Option<&'a Value> {
    summary["requests"]["routes"]
        .as_array()?
        .iter()
        .find(|entry| entry["service"] == service && entry["route"] == route)
}

/// Creates a task through the tasks service's gRPC API and returns it.
pub async fn create_over_grpc(
    tasks: &mut TaskServiceClient<ServiceChannel>,
    request: tasks_pb::CreateTaskRequest,
) -> tasks_pb::Task {
    tasks
        .create_task(request)
        .await
        .expect("the task is created")
        .into_inner()
        .task
        .expect("the answer holds the task")
}

/// Reads a response's status and JSON body.
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body arrives");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("body is json: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

/// Reads a Server-Sent Events answer to its end, which must come within `within`: its whole
/// text, and the JSON data of each event.
pub async fn read_events(response: reqwest::Response, within: Duration) -> (String, Vec<Value>) {
    let text = tokio::time::timeout(within, response.text())
        .await
        .expect("the event stream ends in time")
        .expect("the event stream reads");
    let data = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("event data is json"))
        .collect();
    (text, data)
}

/// Asserts the API's error envelope with `code`.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "answer: {}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "answer: {}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error has a message: {}",
        answer.1
    );
}

/// Returns an HTTP client that sends `key` as `Authorization: Bearer <key>`.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        .expect("keys are header-safe");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client builds")
}

/// Exports buffered spans and asks `arrived` (given how many times it was asked before) until
/// it answers `Some`, for at most 15 seconds; then fails with `what_is_missing`.
pub async fn spans_until<T>(
    telemetry: &swarm_kit::telemetry::Telemetry,
    what_is_missing: &str,
    mut arrived: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let flushing = telemetry.clone();
        tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .expect("the flush does not panic");
        if let Some(found) = arrived() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "{what_is_missing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends a JSON body with `method` to `url` from `client`; returns the status and the JSON
/// answer (`Value::Null` for an empty body).
pub async fn send_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    answer(request.send().await.expect("gateway answers")).await
}

//! The Model Context Protocol at `/mcp` (Streamable HTTP, served by the official Rust SDK,
//! `rmcp`), so MCP-capable agents and assistants dispatch and do work with a URL and a key.
//!
//! Each tool is a REST route: its input schema is built from that route's parameters and body
//! in the OpenAPI document (the same bounds, enums and required fields), and a call is sent
//! through the gateway's own router with the caller's `Authorization` header, so keys, roles,
//! tenancy, limits, tracing and metrics are exactly REST's. A tool's result is the route's JSON
//! answer; a refusal is a tool error carrying the API's error envelope. A caller sees only the
//! tools whose routes its role may call. `wait_for_task` follows a task until it ends, sending
//! progress notifications as it moves, and stops when the client cancels the request.
//!
//! Resources: each task reads as `swarm://tasks/{id}` and the agents as `swarm://agents` (the
//! JSON of `GET /api/tasks/{id}` and `GET /api/agents`); a `subscriptions/listen` stream names a
//! subscribed task whenever it changes.
//!
//! The `/mcp` endpoint itself wants a key the gateway accepts (401/403 otherwise).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, SubscribeRequestParams,
    SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::Role;
use crate::rules::RuleBook;

/// The largest answer a tool passes on.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// How often `wait_for_task` looks at the task.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How long `wait_for_task` waits unless told otherwise, and the most it may be told.
const DEFAULT_WAIT_SECONDS: u64 = 300;
const MAX_WAIT_SECONDS: u64 = 3600;

/// The tools, each a REST route: name, method, path template, description.
const ROUTE_TOOLS: &[(&str, Method, &str, &str)] = &[
    (
        "create_task",
        Method::POST,
        "/api/tasks",
        "Submits a task for an agent to do.",
    ),
    (
        "get_task",
        Method::GET,
        "/api/tasks/{id}",
        "Returns a task: its status, progress, result or error.",
    ),
    (
        "list_tasks",
        Method::GET,
        "/api/tasks",
        "Lists tasks, newest first, by status, kind, agent, user or text in the title.",
    ),
    (
        "cancel_task",
        Method::POST,
        "/api/tasks/{id}/cancel",
        "Cancels a task that has not finished.",
    ),
    (
        "post_message",
        Method::POST,
        "/api/tasks/{id}/messages",
        "Adds a message to a task's conversation.",
    ),
    (
        "list_messages",
        Method::GET,
        "/api/tasks/{id}/messages",
        "Lists a task's messages, oldest first.",
    ),
    (
        "list_agents",
        Method::GET,
        "/api/agents",
        "Lists the agents: capabilities, status, load.",
    ),
    (
        "claim_tasks",
        Method::POST,
        "/api/tasks/claim",
        "Claims tasks this agent is able to do, waiting up to wait_seconds for work.",
    ),
    (
        "report_progress",
        Method::POST,
        "/api/tasks/{id}/progress",
        "Reports progress on a claimed task, which renews its lease.",
    ),
    (
        "complete_task",
        Method::POST,
        "/api/tasks/{id}/complete",
        "Completes a claimed task with its result.",
    ),
    (
        "fail_task",
        Method::POST,
        "/api/tasks/{id}/fail",
        "Fails a claimed task; it is retried while retryable and attempts remain.",
    ),
];

/// The route `wait_for_task` reads.
const TASK_PATH: &str = "/api/tasks/{id}";
/// A task as a resource, and the agents.
const TASK_RESOURCE: &str = "swarm://tasks/";
const AGENTS_RESOURCE: &str = "swarm://agents";
/// How often a subscription looks at the tasks it follows.
const SUBSCRIPTION_POLL: Duration = Duration::from_millis(500);
/// The most resources one session follows, and the most `wait_for_task` calls it runs at once.
const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 32;
const MAX_WAITS_PER_SESSION: usize = 8;

/// One tool: how it shows to clients and which REST route it calls.
#[derive(Debug, Clone)]
struct RouteTool {
    tool: Tool,
    method: Method,
    path: &'static str,
    path_params: Vec<String>,
    query_params: Vec<String>,
}

/// The tools, built once from the API's description.
#[derive(Debug)]
pub struct Tools {
    routes: Vec<RouteTool>,
    wait: Tool,
    book: Arc<RuleBook>,
}

impl Tools {
    /// Builds every tool from `document` (the OpenAPI document the gateway serves) and
    /// `book` (who may call which route).
    pub fn new(document: &utoipa::openapi::OpenApi, book: Arc<RuleBook>) -> Self {
        let document = serde_json::to_value(document).unwrap_or_default();
        let routes = ROUTE_TOOLS
            .iter()
            .map(|(name, method, path, description)| {
                let (schema, path_params, query_params) = input_schema(&document, method, path);
                RouteTool {
                    tool: Tool::new(*name, *description, Arc::new(schema)),
                    method: method.clone(),
                    path,
                    path_params,
                    query_params,
                }
            })
            .collect();
        let wait_schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid", "description": "The task."},
                "timeout_seconds": {
                    "type": "integer", "minimum": 1, "maximum": MAX_WAIT_SECONDS,
                    "description": format!("How long to wait; default {DEFAULT_WAIT_SECONDS}."),
                },
            },
            "required": ["id"],
        });
        let wait = Tool::new(
            "wait_for_task",
            "Waits until a task ends and returns it, sending progress notifications as it moves.",
            Arc::new(object(wait_schema)),
        );
        Self { routes, wait, book }
    }

    /// Tells whether `role` may call the route `method` `path`.
    fn admits(&self, role: Role, method: &Method, path: &str) -> bool {
        self.book
            .get(method, path)
            .is_some_and(|rules| rules.access.admits(role))
    }

    /// The tools `role` may call.
    fn for_role(&self, role: Role) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .routes
            .iter()
            .filter(|route| self.admits(role, &route.method, route.path))
            .map(|route| route.tool.clone())
            .collect();
        if self.admits(role, &Method::GET, TASK_PATH) {
            tools.push(self.wait.clone());
        }
        tools
    }
}

/// Builds a tool's input schema from the parameters and JSON body the OpenAPI document gives
/// the route; returns it with the names of the path and query parameters.
fn input_schema(
    document: &Value,
    method: &Method,
    path: &str,
) -> (JsonObject, Vec<String>, Vec<String>) {
    let operation = &document["paths"][path][method.as_str().to_lowercase()];
    let components = &document["components"]["schemas"];
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    let (mut path_params, mut query_params) = (Vec::new(), Vec::new());
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        match parameter["in"].as_str() {
            Some("path") => path_params.push(name.to_owned()),
            Some("query") => query_params.push(name.to_owned()),
            _ => continue,
        }
        let mut schema = inline(&parameter["schema"], components, 0);
        if let (Some(fields), Some(text)) =
            (schema.as_object_mut(), parameter["description"].as_str())
        {
            fields.entry("description").or_insert_with(|| text.into());
        }
        properties.insert(name.to_owned(), schema);
        if parameter["required"].as_bool() == Some(true) {
            required.push(Value::from(name));
        }
    }
    let body = inline(
        &operation["requestBody"]["content"]["application/json"]["schema"],
        components,
        0,
    );
    if let Some(fields) = body["properties"].as_object() {
        properties.extend(fields.clone());
    }
    required.extend(body["required"].as_array().into_iter().flatten().cloned());
    let schema = json!({"type": "object", "properties": properties, "required": required});
    (object(schema), path_params, query_params)
}

/// Replaces references to the document's components by the schemas they name, so a tool's
/// schema stands alone.
fn inline(schema: &Value, components: &Value, depth: usize) -> Value {
    const MAX_DEPTH: usize = 8;
    match schema {
        Value::Object(fields) => {
            if let Some(name) = fields
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|target| target.strip_prefix("#/components/schemas/"))
                && depth < MAX_DEPTH
            {
                return inline(&components[name], components, depth + 1);
            }
            Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (key.clone(), inline(value, components, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| inline(item, components, depth))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(fields) => fields,
        _ => JsonObject::new(),
    }
}

/// Who calls `/mcp`: the role its key has and the header that proves it.
#[derive(Debug, Clone)]
struct McpCaller {
    role: Role,
    authorization: Option<HeaderValue>,
}

/// The MCP server of one session.
#[derive(Clone)]
struct SwarmMcp {
    tools: Arc<Tools>,
    rest: Router,
    /// The session's resource subscriptions (of clients before 2026-07-28), by URI.
    subscriptions: Arc<std::sync::Mutex<HashMap<String, CancellationToken>>>,
    /// Permits for the session's `wait_for_task` calls running at once.
    waits: Arc<tokio::sync::Semaphore>,
}

impl SwarmMcp {
    /// Sends one REST call through the gateway as `caller`; returns the status and answer.
    async fn send(
        &self,
        caller: &McpCaller,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), McpError> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = &caller.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|error| McpError::internal_error(format!("bad request: {error}"), None))?;
        let Ok(answer) = self.rest.clone().oneshot(request).await;
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|error| {
                McpError::internal_error(format!("answer unreadable: {error}"), None)
            })?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Calls the route of `tool` with `arguments`.
    async fn call_route(
        &self,
        caller: &McpCaller,
        tool: &RouteTool,
        mut arguments: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        let mut path = tool.path.to_owned();
        for name in &tool.path_params {
            let Some(value) = arguments.remove(name) else {
                return Ok(refusal("invalid_argument", &format!("{name} is required")));
            };
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let encoded: String = url_escape(&text);
            path = path.replace(&format!("{{{name}}}"), &encoded);
        }
        let query: Vec<(String, String)> = tool
            .query_params
            .iter()
            .filter_map(|name| {
                let value = arguments.remove(name)?;
                Some((
                    name.clone(),
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned),
                ))
            })
            .collect();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&serde_urlencoded::to_string(&query).unwrap_or_default());
        }
        let body = (tool.method != Method::GET).then_some(Value::Object(arguments));
        let (status, answer) = self.send(caller, tool.method.clone(), &path, body).await?;
        Ok(outcome(status, answer))
    }

    /// Follows a task until it ends (or the wait is over, or the client cancels), sending
    /// progress notifications when its status or progress moves.
    async fn wait_for_task(
        &self,
        caller: &McpCaller,
        arguments: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let Some(id) = arguments.get("id").and_then(Value::as_str) else {
            return Ok(refusal("invalid_argument", "id is required"));
        };
        let seconds = arguments
            .get("timeout_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_WAIT_SECONDS);
        if !(1..=MAX_WAIT_SECONDS).contains(&seconds) {
            return Ok(refusal(
                "invalid_argument",
                &format!("timeout_seconds must be between 1 and {MAX_WAIT_SECONDS}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let uri = format!("/api/tasks/{}", url_escape(id));
        let token = context.meta.get_progress_token();
        let mut last_seen = None;
        loop {
            let (status, answer) = self.send(caller, Method::GET, &uri, None).await?;
            if !status.is_success() {
                return Ok(outcome(status, answer));
            }
            let task: Value = serde_json::from_str(&answer).unwrap_or_default();
            let state = task["status"].as_str().unwrap_or_default().to_owned();
            let percent = task["progress"]["percent"].as_f64().unwrap_or(0.0);
            let seen = (state.clone(), percent, task["progress"]["message"].clone());
            if last_seen.as_ref() != Some(&seen) {
                if let Some(token) = token.clone() {
                    let note = task["progress"]["message"]
                        .as_str()
                        .map_or_else(|| state.clone(), |message| format!("{state}: {message}"));
                    let progress = ProgressNotificationParam::new(token, percent)
                        .with_total(100.0)
                        .with_message(note);
                    // A client that stopped listening is noticed by the cancellation below.
                    let _ = context.peer.notify_progress(progress).await;
                }
                last_seen = Some(seen);
            }
            if matches!(state.as_str(), "completed" | "failed" | "cancelled") {
                return Ok(outcome(status, answer));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(refusal(
                    "deadline_exceeded",
                    &format!("task {id} did not end within {seconds} s; it is {state}"),
                ));
            }
            if context.peer.is_transport_closed() {
                return Err(McpError::internal_error("the client went away", None));
            }
            tokio::select! {
                () = tokio::time::sleep(WAIT_POLL) => {}
                () = context.ct.cancelled() => {
                    return Err(McpError::internal_error("the client cancelled the wait", None));
                }
            }
        }
    }
}

impl SwarmMcp {
    /// The REST path a resource URI names.
    fn resource_path(uri: &str) -> Option<String> {
        if uri == AGENTS_RESOURCE {
            return Some("/api/agents?per_page=100".to_owned());
        }
        let id = uri.strip_prefix(TASK_RESOURCE)?;
        (!id.is_empty() && !id.contains('/')).then(|| format!("/api/tasks/{}", url_escape(id)))
    }

    /// Reads a resource as `caller`: the route's JSON, or the refusal as an MCP error.
    async fn read(&self, caller: &McpCaller, uri: &str) -> Result<String, McpError> {
        let Some(path) = Self::resource_path(uri) else {
            return Err(McpError::resource_not_found(
                format!("no resource {uri:?}"),
                None,
            ));
        };
        let (status, answer) = self.send(caller, Method::GET, &path, None).await?;
        if status.is_success() {
            return Ok(answer);
        }
        let envelope: Value = serde_json::from_str(&answer).unwrap_or_default();
        let message = envelope["error"]["message"]
            .as_str()
            .unwrap_or("refused")
            .to_owned();
        Err(if status == StatusCode::NOT_FOUND {
            McpError::resource_not_found(message, Some(envelope))
        } else {
            McpError::invalid_request(message, Some(envelope))
        })
    }

    /// Reads `uris` as `caller` every [`SUBSCRIPTION_POLL`] and calls `changed` with each one
    /// whose task moved, until `changed` answers that nobody listens, `stop` resolves, or the
    /// session's connection (`peer`) is gone.
    async fn follow<F, Fut>(
        &self,
        caller: &McpCaller,
        peer: &rmcp::Peer<RoleServer>,
        uris: &[String],
        changed: F,
        stop: impl Future<Output = ()>,
    ) where
        F: Fn(String) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut stop = std::pin::pin!(stop);
        let mut last_seen: Vec<Option<String>> = vec![None; uris.len()];
        while !peer.is_transport_closed() {
            for (uri, seen) in uris.iter().zip(last_seen.iter_mut()) {
                let now = self.read(caller, uri).await.ok().map(|answer| {
                    let task: Value = serde_json::from_str(&answer).unwrap_or_default();
                    task["updated_at"].to_string() + &task["progress"].to_string()
                });
                if seen.is_some() && now != *seen && !changed(uri.clone()).await {
                    return;
                }
                *seen = now;
            }
            tokio::select! {
                () = tokio::time::sleep(SUBSCRIPTION_POLL) => {}
                () = &mut stop => return,
            }
        }
    }
}

/// A REST answer as a tool's result: its JSON on success, a tool error with the envelope
/// otherwise.
fn outcome(status: StatusCode, answer: String) -> CallToolResult {
    if status.is_success() {
        CallToolResult::success(vec![ContentBlock::text(answer)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(answer)])
    }
}

/// A tool error in the API's envelope.
fn refusal(code: &str, message: &str) -> CallToolResult {
    let envelope = json!({"error": {"code": code, "message": message}});
    CallToolResult::error(vec![ContentBlock::text(envelope.to_string())])
}

/// Escapes a path segment.
fn url_escape(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|pair| pair.trim_start_matches('=').replace('+', "%20"))
        .unwrap_or_default()
}

/// The caller of an MCP request, as the admission layer recorded it.
fn caller_of(context: &RequestContext<RoleServer>) -> Result<McpCaller, McpError> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<McpCaller>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the caller is unknown", None))
}

impl ServerHandler for SwarmMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("swarm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Swarm dispatches tasks to a fleet of agents. Create a task, wait for it, read \
                 its result; with an agent key, claim tasks and report on them.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = caller_of(&context)?;
        Ok(ListToolsResult::with_all_items(
            self.tools.for_role(caller.role),
        ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let caller = caller_of(&context)?;
        let agents = self
            .tools
            .admits(caller.role, &Method::GET, "/api/agents")
            .then(|| Resource::new(AGENTS_RESOURCE, "agents").with_mime_type("application/json"));
        Ok(ListResourcesResult::with_all_items(
            agents.into_iter().collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let task = ResourceTemplate::new(format!("{TASK_RESOURCE}{{id}}"), "task")
            .with_mime_type("application/json");
        Ok(ListResourceTemplatesResult::with_all_items(vec![task]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let caller = caller_of(&context)?;
        let text = self.read(&caller, &request.uri).await?;
        let contents = ResourceContents::text(text, request.uri).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// Follows the subscribed tasks, naming each one when it changes, until the client ends
    /// the subscription (clients of 2026-07-28 and later).
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let caller = caller_of(context.request_context())?;
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let sink = context.sink().clone();
        let changed = |uri: String| {
            let sink = sink.clone();
            async move { sink.notify_resource_updated(uri).await.is_ok() }
        };
        let peer = context.request_context().peer.clone();
        self.follow(&caller, &peer, &uris, changed, context.cancelled())
            .await;
        Ok(())
    }

    /// Follows one task for the session until it unsubscribes (clients before 2026-07-28).
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = caller_of(&context)?;
        self.read(&caller, &request.uri).await?;
        let stop = CancellationToken::new();
        {
            let mut subscriptions = self
                .subscriptions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            subscriptions.retain(|_, stop| !stop.is_cancelled());
            if subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_SESSION
                && !subscriptions.contains_key(&request.uri)
            {
                return Err(McpError::invalid_request(
                    format!("a session follows at most {MAX_SUBSCRIPTIONS_PER_SESSION} resources"),
                    None,
                ));
            }
            if let Some(previous) = subscriptions.insert(request.uri.clone(), stop.clone()) {
                previous.cancel();
            }
        }
        let server = self.clone();
        let peer = context.peer.clone();
        tokio::spawn(async move {
            let changed = |uri: String| {
                let peer = peer.clone();
                async move {
                    let update = ResourceUpdatedNotificationParam::new(uri);
                    peer.notify_resource_updated(update).await.is_ok()
                }
            };
            let uris = [request.uri];
            server
                .follow(
                    &caller,
                    &peer,
                    &uris,
                    changed,
                    stop.clone().cancelled_owned(),
                )
                .await;
            stop.cancel(); // the slot frees when the follow ends, however it ends
        });
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let removed = self
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&request.uri);
        if let Some(stop) = removed {
            stop.cancel();
        }
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = caller_of(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        if request.name == self.tools.wait.name {
            if !self.tools.admits(caller.role, &Method::GET, TASK_PATH) {
                return Ok(refusal("permission_denied", "this key may not read tasks").into());
            }
            let Ok(_permit) = self.waits.try_acquire() else {
                let busy = format!("a session runs at most {MAX_WAITS_PER_SESSION} waits at once");
                return Ok(refusal("rate_limited", &busy).into());
            };
            return Ok(self
                .wait_for_task(&caller, &arguments, &context)
                .await?
                .into());
        }
        let Some(tool) = self
            .tools
            .routes
            .iter()
            .find(|route| route.tool.name == request.name)
        else {
            return Err(McpError::invalid_params(
                format!("no tool named {:?}", request.name),
                None,
            ));
        };
        Ok(self.call_route(&caller, tool, arguments).await?.into())
    }
}

/// The most MCP sessions (of protocols before 2026-07-28, which have them) one key holds.
const MAX_SESSIONS_PER_KEY: usize = 16;
/// How long a session lives without a request.
const SESSION_IDLE: Duration = Duration::from_secs(600);
const SESSION_HEADER: &str = "mcp-session-id";

/// The sessions one key holds, and how many it is opening.
#[derive(Debug, Default)]
struct Held {
    ids: Vec<String>,
    opening: usize,
}

/// Who holds which sessions, to bound how many one key opens and to keep each session to the
/// key that opened it.
struct Sessions {
    manager: Arc<LocalSessionManager>,
    /// By the fingerprint of the key.
    by_key: std::sync::Mutex<HashMap<String, Held>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.by_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves a new session for `key` unless it holds (or is opening) its most already.
    async fn reserve(self: &Arc<Self>, key: &str) -> Option<Opening> {
        let live: Vec<String> = self
            .manager
            .sessions
            .read()
            .await
            .keys()
            .map(|id| id.as_ref().to_owned())
            .collect();
        let mut by_key = self.lock();
        let held = by_key.entry(key.to_owned()).or_default();
        held.ids.retain(|id| live.contains(id));
        if held.ids.len() + held.opening >= MAX_SESSIONS_PER_KEY {
            return None;
        }
        held.opening += 1;
        Some(Opening {
            sessions: Arc::clone(self),
            key: key.to_owned(),
            opened: None,
        })
    }

    /// Tells whether `key` opened the session `id`.
    fn owns(&self, key: &str, id: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|held| held.ids.iter().any(|own| own == id))
    }
}

/// A session a key is opening: it counts against the key's bound until it is dropped, which
/// records the session it opened, if any. A request dropped before its answer (the client went
/// away) so releases its reservation too.
struct Opening {
    sessions: Arc<Sessions>,
    key: String,
    opened: Option<String>,
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut by_key = self.sessions.lock();
        let held = by_key.entry(std::mem::take(&mut self.key)).or_default();
        held.opening = held.opening.saturating_sub(1);
        held.ids.extend(self.opened.take());
    }
}

/// The fingerprint of the key a request carries: its secret, however the scheme is spelled
/// (the gateway reads `Bearer` in any case, around any space), so one key is one holder.
fn key_fingerprint(authorization: Option<&HeaderValue>) -> String {
    let secret = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, secret)| secret.trim());
    swarm_kit::digest::sha256_hex(secret.as_bytes())
}

/// The `/mcp` routes over `rest`, the gateway's REST router, which every tool call goes
/// through. A key holds at most [`MAX_SESSIONS_PER_KEY`] sessions; one idle for
/// [`SESSION_IDLE`] ends, and every one ends when `shutdown` is cancelled (so the gateway's
/// drain does not wait on open event streams).
pub fn router(rest: Router, tools: Tools, shutdown: &CancellationToken) -> Router {
    let tools = Arc::new(tools);
    let rest_for_tools = rest.clone();
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(SESSION_IDLE);
    let manager = Arc::new(manager);
    let sessions = Arc::new(Sessions {
        manager: Arc::clone(&manager),
        by_key: std::sync::Mutex::default(),
    });
    // Keys, not the Host header, guard this endpoint: it answers any host name the gateway
    // is reached by.
    let config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(shutdown.child_token())
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || {
            Ok(SwarmMcp {
                tools: Arc::clone(&tools),
                rest: rest_for_tools.clone(),
                subscriptions: Arc::default(),
                waits: Arc::new(tokio::sync::Semaphore::new(MAX_WAITS_PER_SESSION)),
            })
        },
        manager,
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                admit(rest.clone(), Arc::clone(&sessions), request, next)
            },
        ))
}

/// Lets a request to `/mcp` through when its key is one the gateway accepts (asking the
/// gateway who it is, as any REST client may), recording the caller for the tools, and when a
/// new session would not take the key past its bound.
async fn admit(
    rest: Router,
    sessions: Arc<Sessions>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let mut whoami = Request::builder().uri("/api/keys/current");
    if let Some(value) = &authorization {
        whoami = whoami.header(header::AUTHORIZATION, value);
    }
    let Ok(whoami) = whoami.body(Body::empty()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(answer) = rest.oneshot(whoami).await;
    if !answer.status().is_success() {
        return answer;
    }
    let bytes = axum::body::to_bytes(answer.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let current: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let Some(role) = current["role"].as_str().and_then(|role| role.parse().ok()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let key = key_fingerprint(authorization.as_ref());
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &session
        && !sessions.owns(&key, id)
    {
        // Another key's session, or none: the same answer, so ids cannot be probed.
        return crate::error::ApiError::new(swarm_kit::ErrorCode::NotFound, "no such MCP session")
            .into_response();
    }
    let mut opening = None;
    if request.method() == Method::POST && session.is_none() {
        opening = sessions.reserve(&key).await;
        if opening.is_none() {
            return crate::error::ApiError::new(
                swarm_kit::ErrorCode::ResourceExhausted,
                format!(
                    "this key holds {MAX_SESSIONS_PER_KEY} MCP sessions: end one (DELETE /mcp) or let it idle out"
                ),
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(McpCaller {
        role,
        authorization,
    });
    let response = next.run(request).await;
    if let Some(opening) = &mut opening {
        opening.opened = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_that_never_opened_gives_its_reservation_back() {
        let sessions = Arc::new(Sessions {
            manager: Arc::new(LocalSessionManager::default()),
            by_key: std::sync::Mutex::default(),
        });
        // Requests that went away before their answer, more than the bound allows at once.
        for _ in 0..2 * MAX_SESSIONS_PER_KEY {
            let opening = sessions.reserve("key").await;
            assert!(opening.is_some(), "a dropped opening holds no place");
        }
        let held: Vec<Opening> = futures_util::future::join_all(
            (0..MAX_SESSIONS_PER_KEY).map(|_| sessions.reserve("key")),
        )
        .await
        .into_iter()
        .map(|opening| opening.expect("within the bound"))
        .collect();
        assert!(sessions.reserve("key").await.is_none(), "the bound holds");
        assert!(sessions.reserve("another key").await.is_some());
        drop(held);
        assert!(sessions.reserve("key").await.is_some());
    }
}

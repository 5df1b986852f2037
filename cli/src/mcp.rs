//! `swarm mcp`: a stdio bridge for desktop MCP clients, which start a server process and speak
//! to it over stdin and stdout. It reads JSON-RPC messages (one per line) from stdin, posts each
//! to the gateway's `/mcp` (Streamable HTTP) with the key, and writes every message the gateway
//! answers, as JSON or as Server-Sent Events, to stdout, one per line. It keeps the session id
//! and protocol version the gateway settles on, opens the session's event stream for messages
//! the gateway sends on its own (resource updates), and ends the session when stdin closes.
//! Sessions live in the gateway's memory: when a restarted gateway no longer knows the session
//! (404), the bridge opens a new one with the client's own `initialize` and sends the request
//! again, so the desktop client need not start over.
//!
//! Requests go out concurrently, so a long `wait_for_task` does not hold up the others. The
//! bridge forwards messages as they are: it is a transport, not a second MCP implementation.

use std::sync::{Arc, Mutex};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::client::{ClientError, Connection};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// What the bridge learned of the session: its id and protocol version, once known, and the
/// client's `initialize` request, to open the session again.
#[derive(Debug, Default)]
struct Session {
    id: Option<String>,
    version: Option<String>,
    listening: bool,
    initialize: Option<String>,
}

/// One bridge between stdio and a gateway.
#[derive(Clone)]
struct Bridge {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    session: Arc<Mutex<Session>>,
    /// Held while a lost session is opened again, so concurrent requests open one between them.
    reopening: Arc<tokio::sync::Mutex<()>>,
    out: mpsc::UnboundedSender<String>,
}

/// Bridges stdin and stdout to the gateway's `/mcp` until stdin closes.
pub async fn run(connection: Connection) -> Result<(), ClientError> {
    let (out, mut lines_out) = mpsc::unbounded_channel::<String>();
    let bridge = Bridge {
        http: reqwest::Client::builder().build()?,
        url: format!("{}/mcp", connection.url.trim_end_matches('/')),
        key: connection.key,
        session: Arc::default(),
        reopening: Arc::default(),
        out,
    };
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_out.recv().await {
            let written = stdout.write_all(format!("{line}\n").as_bytes()).await;
            if written.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut sending = tokio::task::JoinSet::new();
    while let Some(line) = stdin.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        // Requests run side by side; a notification or a response goes out before anything
        // read after it, so `notifications/initialized` precedes the session's requests.
        let is_request = serde_json::from_str::<Value>(&line)
            .is_ok_and(|message| message.get("id").is_some() && message.get("method").is_some());
        if is_request {
            let bridge = bridge.clone();
            sending.spawn(async move { bridge.forward(line).await });
        } else {
            bridge.forward(line).await;
        }
    }
    while sending.join_next().await.is_some() {}
    bridge.close().await;
    drop(bridge);
    let _ = writer.await;
    Ok(())
}

impl Bridge {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(value) = self
            .key
            .as_ref()
            .and_then(|key| HeaderValue::from_str(&format!("Bearer {key}")).ok())
        {
            headers.insert(AUTHORIZATION, value);
        }
        let session = self.lock();
        for (name, value) in [
            (SESSION_HEADER, &session.id),
            (VERSION_HEADER, &session.version),
        ] {
            if let Some(value) = value
                .as_deref()
                .and_then(|text| HeaderValue::from_str(text).ok())
            {
                headers.insert(name, value);
            }
        }
        headers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Posts one message with the session's headers; notes the session id it is given.
    async fn post(&self, line: &str) -> reqwest::Result<reqwest::Response> {
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers())
            .header(CONTENT_TYPE, "application/json")
            .body(line.to_owned())
            .send()
            .await?;
        if let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            self.lock().id = Some(id.to_owned());
        }
        Ok(response)
    }

    /// Opens the session again after the gateway forgot `lost` (unless another request did
    /// already): the client's `initialize` (its answer was given long ago, so it is not passed
    /// on) and `notifications/initialized`; then the event stream. Tells whether a session is
    /// open.
    async fn reopen(&self, lost: &str) -> bool {
        let _reopening = self.reopening.lock().await;
        let initialize = {
            let mut session = self.lock();
            if session.id.as_deref() != Some(lost) {
                return session.id.is_some();
            }
            session.id = None;
            session.listening = false;
            session.initialize.clone()
        };
        let Some(initialize) = initialize else {
            return false;
        };
        let opened = match self.post(&initialize).await {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if !opened || self.post(&initialized.to_string()).await.is_err() {
            return false;
        }
        self.listen();
        true
    }

    /// Posts one message and passes on what the gateway answers to it.
    async fn forward(&self, line: String) {
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(error) => {
                self.refuse(&Value::Null, -32700, &format!("not JSON: {error}"));
                return;
            }
        };
        if message["method"] == "initialize" {
            self.lock().initialize = Some(line.clone());
        }
        let used = self.lock().id.clone();
        let mut answer = self.post(&line).await;
        if let (Ok(response), Some(lost)) = (&answer, &used)
            && response.status() == reqwest::StatusCode::NOT_FOUND
            && self.reopen(lost).await
        {
            answer = self.post(&line).await;
        }
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                self.refuse(
                    &message,
                    -32000,
                    &format!("the gateway cannot be reached: {error}"),
                );
                return;
            }
        };
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            let reason = body["error"]["message"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_owned);
            self.refuse(&message, -32001, &format!("the gateway refused: {reason}"));
            return;
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|kind| kind.starts_with("text/event-stream"));
        if is_stream {
            self.pass_events(response).await;
        } else if let Ok(body) = response.text().await
            && !body.trim().is_empty()
        {
            self.pass(body);
        }
        if message["method"] == "notifications/initialized" {
            self.listen();
        }
    }

    /// Answers a request the gateway did not (nothing answers a notification, which has no
    /// id; a line that is not JSON gets an answer with a null id).
    fn refuse(&self, message: &Value, code: i64, text: &str) {
        let id = match message.get("id") {
            Some(id) => id.clone(),
            None if message.is_null() => Value::Null,
            None => return,
        };
        let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": text}});
        let _ = self.out.send(error.to_string());
    }

    /// Passes on one message, noting the protocol version an initialize result settles on.
    fn pass(&self, text: String) {
        if let Ok(message) = serde_json::from_str::<Value>(&text)
            && let Some(version) = message["result"]["protocolVersion"].as_str()
        {
            self.lock().version = Some(version.to_owned());
        }
        let _ = self.out.send(text.replace('\n', " "));
    }

    /// Passes on every event of a stream until it ends.
    async fn pass_events(&self, response: reqwest::Response) {
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if !event.data.trim().is_empty() {
                self.pass(event.data);
            }
        }
    }

    /// Opens the session's event stream once, for messages the gateway sends on its own.
    fn listen(&self) {
        {
            let mut session = self.lock();
            if session.listening || session.id.is_none() {
                return;
            }
            session.listening = true;
        }
        let bridge = self.clone();
        tokio::spawn(async move {
            let stream = bridge
                .http
                .get(&bridge.url)
                .headers(bridge.headers())
                .send()
                .await;
            if let Ok(response) = stream
                && response.status().is_success()
            {
                bridge.pass_events(response).await;
            }
        });
    }

    /// Ends the session at the gateway.
    async fn close(&self) {
        let has_session = self.lock().id.is_some();
        if has_session {
            let _ = self
                .http
                .delete(&self.url)
                .headers(self.headers())
                .send()
                .await;
        }
    }
}

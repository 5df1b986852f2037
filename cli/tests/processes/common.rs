//! What the CLI's end-to-end tests share: a stack with a known admin key, the `swarm` binary
//! run against it as that key's holder, and the API called with the same key.

use std::process::{Command, Output};

use serde_json::Value;
use swarm_cli::stack::{Stack, StackConfig};
use swarm_gateway::GatewayConfig;
use swarm_kit::testing::TestDatabase;

/// The admin key of the stacks these tests start.
pub const KEY: &str = "swarm_cli_test_key_0123456789abcdef0123";

/// Starts every role over `database` with [`KEY`] as its admin key, as `tune` adjusts.
pub async fn start_stack(database: &TestDatabase, tune: impl FnOnce(&mut StackConfig)) -> Stack {
    let mut config = StackConfig {
        gateway: GatewayConfig {
            admin_key: Some(KEY.to_owned()),
            ..GatewayConfig::default()
        },
        ..StackConfig::local(database.url())
    };
    tune(&mut config);
    Stack::start(config).await.expect("the stack starts")
}

/// The `swarm` binary, pointed at `url` with [`KEY`].
pub fn swarm(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarm"));
    command
        .env("SWARM_URL", url)
        .env("SWARM_KEY", KEY)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn");
    command
}

/// Runs `swarm` with `args` against `url` to its end.
pub fn run(url: &str, args: &[&str]) -> Output {
    swarm(url).args(args).output().expect("swarm runs")
}

/// What a run printed, both streams.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON a successful run printed.
pub fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "{}", text(output));
    serde_json::from_slice(&output.stdout).expect("json output")
}

/// Calls the API at `url` as [`KEY`]'s holder and returns the JSON answer (null when empty).
pub async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = http
        .request(method, format!("{url}{path}"))
        .bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let bytes = request.send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

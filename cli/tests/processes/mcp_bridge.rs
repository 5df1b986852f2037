//! `swarm mcp` as a desktop MCP client runs it, a process spoken to over stdin and stdout,
//! across a restart of the gateway, which forgets every session it held.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_kit::testing::{Backend, TestDatabase};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

use crate::common::{start_stack, swarm};

/// Sends `message` to the bridge and returns its answer, the line that carries the same id.
async fn ask(
    stdin: &mut ChildStdin,
    stdout: &mut Lines<BufReader<ChildStdout>>,
    message: Value,
) -> Value {
    stdin
        .write_all(format!("{message}\n").as_bytes())
        .await
        .unwrap();
    let answered = async {
        loop {
            let line = stdout
                .next_line()
                .await
                .unwrap()
                .expect("the bridge answers");
            let answer: Value = serde_json::from_str(&line).unwrap();
            if answer["id"] == message["id"] {
                return answer;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .expect("an answer in time")
}

/// Asserts that `answer` is a `tools/list` result with tools in it.
#[track_caller]
fn assert_lists_tools(answer: &Value) {
    assert!(
        answer["result"]["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_opens_a_new_session_when_a_restarted_gateway_forgot_its_own() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stack = start_stack(&database, |config| config.gateway_addr = address).await;
    let url = stack.gateway_url();
    let mut bridge = tokio::process::Command::from(swarm(&url))
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = bridge.stdin.take().unwrap();
    let mut stdout = BufReader::new(bridge.stdout.take().unwrap()).lines();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "swarm-test", "version": "1"}}});
    let initialized = ask(&mut stdin, &mut stdout, initialize).await;
    assert!(
        initialized["result"]["serverInfo"].is_object(),
        "{initialized}"
    );
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .unwrap();
    let list = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
    let tools = ask(&mut stdin, &mut stdout, list(2)).await;
    assert_lists_tools(&tools);

    stack.stop().await.unwrap();
    let stack = start_stack(&database, |config| config.gateway_addr = address).await;
    let tools = ask(&mut stdin, &mut stdout, list(3)).await;
    assert_lists_tools(&tools);

    drop(stdin);
    tokio::time::timeout(Duration::from_secs(10), bridge.wait())
        .await
        .expect("the bridge ends with its stdin")
        .unwrap();
    stack.stop().await.unwrap();
}

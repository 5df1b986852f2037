//! The example agent behind `swarm agent`: a worker built on the SDK that does real work on
//! `echo` tasks (the result is the payload) and `sleep` tasks (waits `payload.ms` milliseconds,
//! reporting progress halfway, and stops early when the task is cancelled), and refuses other
//! kinds for good.

use std::time::Duration;

use serde_json::{Value, json};
use swarm_sdk::{Assignment, Failure};

/// The longest a `sleep` task may ask for.
const MAX_SLEEP_MS: u64 = 60_000;

/// Does one task.
pub async fn handle(task: Assignment) -> Result<Value, Failure> {
    match task.kind.as_str() {
        "echo" => Ok(task.payload.clone()),
        "sleep" => {
            let ms = task
                .payload
                .get("ms")
                .and_then(Value::as_u64)
                .unwrap_or(100);
            if ms > MAX_SLEEP_MS {
                return Err(Failure::permanent(format!(
                    "ms must be at most {MAX_SLEEP_MS}"
                )));
            }
            let halves = [ms / 2, ms - ms / 2];
            for (half, sleep_ms) in halves.into_iter().enumerate() {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                    () = task.cancelled() => return Err(Failure::permanent("cancelled")),
                }
                if half == 0
                    && let Err(error) = task.progress(50, Some("halfway")).await
                {
                    return Err(Failure::transient(format!("lost the lease: {error}")));
                }
            }
            Ok(json!({ "slept_ms": ms }))
        }
        other => Err(Failure::permanent(format!(
            "unsupported task kind {other:?}"
        ))),
    }
}

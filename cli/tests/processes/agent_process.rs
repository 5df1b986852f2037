//! `swarm agent` as a process, the way a worker host runs it: a task submitted with
//! `swarm task create` and followed with `swarm task watch` completes (exit 0), and killing an
//! agent with SIGKILL in the middle of its tasks gets them to another agent within the agent
//! TTL plus a few seconds, each completing once more on a second attempt.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_kit::testing::{Backend, TestDatabase};

use crate::common::{json_of, run, start_stack, swarm, text};

const AGENT_TTL: Duration = Duration::from_secs(3);

/// Starts `swarm agent --name <name>` (echo and sleep, two at a time).
fn agent(url: &str, name: &str) -> Child {
    swarm(url)
        .args(["agent", "--name", name])
        .stdout(Stdio::null())
        .spawn()
        .expect("swarm agent starts")
}

async fn task(http: &reqwest::Client, url: &str, id: &str) -> Value {
    crate::common::api(
        http,
        reqwest::Method::GET,
        url,
        &format!("/api/tasks/{id}"),
        None,
    )
    .await
}

/// Reads task `id` until `done` says it is as expected, for at most `patience`.
async fn until(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    patience: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let task = task(http, url, id).await;
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "task not there yet: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn created_id(output: &Output) -> String {
    json_of(output)["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_processes_run_watched_tasks_and_take_over_from_a_killed_one() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let stack = start_stack(&database, |config| {
        config.agents.agent_ttl = AGENT_TTL;
        config.tasks.lease_sweep_interval = Duration::from_millis(200);
    })
    .await;
    let url = stack.gateway_url();
    let http = reqwest::Client::new();

    let mut doomed = agent(&url, "doomed");
    let sleepers: Vec<String> = (0..2)
        .map(|n| {
            created_id(&run(
                &url,
                &[
                    "task",
                    "create",
                    "--title",
                    &format!("sleep {n}"),
                    "--kind",
                    "sleep",
                    "--payload",
                    r#"{"ms":1500}"#,
                    "--output",
                    "json",
                ],
            ))
        })
        .collect();
    let mut holder = None;
    for id in &sleepers {
        let held = until(&http, &url, id, Duration::from_secs(20), |task| {
            task["status"] == "active"
        })
        .await;
        holder.get_or_insert(held["agent_id"].clone());
        assert_eq!(
            Some(&held["agent_id"]),
            holder.as_ref(),
            "one agent holds both"
        );
    }
    doomed.kill().unwrap(); // SIGKILL: no report, no goodbye
    doomed.wait().unwrap();
    let killed_at = Instant::now();

    let mut heir = agent(&url, "heir");
    for id in &sleepers {
        let done = until(
            &http,
            &url,
            id,
            AGENT_TTL + Duration::from_secs(15),
            |task| task["status"] == "completed",
        )
        .await;
        assert_eq!(done["attempts"], 2, "{done}");
        assert_ne!(Some(&done["agent_id"]), holder.as_ref());
    }
    let taken_over_in = killed_at.elapsed();
    assert!(
        taken_over_in < AGENT_TTL + Duration::from_secs(5) + Duration::from_millis(1500),
        "taken over and finished in {taken_over_in:?}"
    );

    // The README's first steps: create an echo task and watch it; the watch exits 0.
    let id = created_id(&run(
        &url,
        &[
            "task", "create", "--title", "hi", "--kind", "echo", "--output", "json",
        ],
    ));
    let watched = run(&url, &["task", "watch", &id]);
    let said = text(&watched);
    assert!(watched.status.success(), "{said}");
    assert!(said.contains("completed"), "{said}");
    let echoed = task(&http, &url, &id).await;
    assert_eq!(echoed["result"], json!(null), "an echo of no payload");

    heir.kill().unwrap();
    heir.wait().unwrap();
    stack.stop().await.unwrap();
}

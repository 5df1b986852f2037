//! Metrics end to end: every process reports to the metrics service, whose summary
//! (`GET /api/metrics`) and Prometheus text (`GET /metrics` on the gateway and on its own port)
//! show requests per route, the database, the cache, the queue and memory, with alerts for the
//! targets breached; the exposition passes `promtool check metrics`. A missing or dead metrics
//! service costs callers nothing.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_e2e::{TestStack, assert_error, route_figures};
use swarm_kit::testing::Backend;

/// Runs `promtool check metrics` over `text`; returns its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (make test installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && said.trim().is_empty(), said)
}

async fn every_process_reports_and_the_figures_add_up(backend: Backend) {
    // Statements are measured by the telemetry every swarm process installs.
    swarm_kit::telemetry::init_with("swarm-e2e", None);
    let swarm = TestStack::start_with(backend, |config| {
        // Every statement counts as slow, and any process breaches a 1 MB memory target.
        config.tasks.database.slow_query = Duration::ZERO;
        config.metrics.targets.memory_mb = 1.0;
    })
    .await;
    let agent = swarm.register_agent("measured", &[], 1).await;
    for i in 0..5 {
        let (status, _) = swarm
            .post("/api/tasks", json!({"title": format!("t{i}")}))
            .await;
        assert_eq!(status, 201);
    }
    swarm.claim(&agent, 1).await;
    for _ in 0..3 {
        assert_eq!(
            swarm.get(&format!("/api/agents/{agent}/config")).await.0,
            200
        );
    }
    assert_eq!(
        swarm
            .get("/api/tasks/00000000-0000-0000-0000-000000000000")
            .await
            .0,
        404
    );
    assert_eq!(swarm.get("/no/such/route").await.0, 404);

    let summary = swarm
        .metrics_when(|summary| {
            route_figures(summary, "gateway", "POST /api/tasks").is_some_and(|r| r["total"] == 5)
                && summary["tasks"]["queued"] == 4
                && summary["tasks"]["active"] == 1
                && summary["cache"]["hits"].as_u64() > Some(0)
                && summary["alerts"]
                    .as_array()
                    .is_some_and(|alerts| alerts.iter().any(|a| a["name"] == "memory_mb"))
        })
        .await;
    let created = route_figures(&summary, "gateway", "POST /api/tasks").unwrap();
    assert_eq!(created["errors"], 0);
    assert!(created["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let missing = route_figures(&summary, "gateway", "GET /api/tasks/{id}").unwrap();
    assert_eq!(missing["total"], 1);
    assert_eq!(
        missing["errors"], 0,
        "a 404 is the client's error, not the server's"
    );
    assert!(route_figures(&summary, "gateway", "unmatched").is_some());
    assert!(
        route_figures(&summary, "tasks", "/swarm.tasks.v1.TaskService/CreateTask")
            .is_some_and(|r| r["total"] == 5),
        "the tasks service reports its own calls"
    );
    assert!(route_figures(&summary, "gateway", "GET /api/metrics").is_some());
    assert!(
        summary["requests"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(
                |r| r["route"] != "GET /health" && !r["route"].as_str().unwrap().contains("Record")
            ),
        "health checks and metric reports are not traffic"
    );
    assert!(summary["database"]["pool_size"].as_u64() > Some(0));
    assert!(summary["database"]["slow_queries"].as_u64() > Some(0));
    for service in ["gateway", "tasks", "agents", "cache", "metrics"] {
        assert!(
            summary["memory"][service]["rss_mb"].as_f64() > Some(1.0),
            "{service} reports its memory: {}",
            summary["memory"]
        );
    }
    let alert = summary["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["name"] == "memory_mb")
        .unwrap();
    assert_eq!(alert["target"], 1.0);
    assert!(alert["value"].as_f64() > Some(1.0));
    assert!(alert["since"].is_string());
    assert_eq!(summary["window_seconds"], 60);
    assert!(
        summary["queue_wait_ms"]["p99"].as_f64() > Some(0.0),
        "the claim waited a little"
    );

    // Prometheus text through the gateway, checked by Prometheus's own tool.
    let response = swarm.http.get(swarm.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let (clean, said) = promtool_check(&text);
    assert!(clean, "promtool check metrics: {said}");
    assert!(text.contains("# TYPE swarm_request_duration_seconds histogram"));
    assert!(text.contains(r#"swarm_request_duration_seconds_bucket{service="gateway","#));
    assert!(text.contains(r#"le="+Inf"}"#));
    assert!(text.contains(r#"swarm_tasks{service="tasks","#));
    assert!(text.contains("# TYPE swarm_db_slow_queries_total counter"));

    // The same text on the metrics service's own port, for scrapers.
    let own = reqwest::get(format!("{}/metrics", swarm.stack.metrics_url()))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let own = own.text().await.unwrap();
    assert!(own.contains("# TYPE swarm_process_resident_memory_bytes gauge"));
    assert!(promtool_check(&own).0);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_metrics_service_costs_callers_nothing() {
    let dead = "http://127.0.0.1:1".to_owned();
    let swarm = TestStack::start_with(Backend::Sqlite, |config| {
        config.report_metrics = false;
        for metrics in [
            &mut config.tasks.metrics,
            &mut config.agents.metrics,
            &mut config.cache.metrics,
        ] {
            metrics.url = Some(dead.clone());
        }
    })
    .await;
    let started = Instant::now();
    for i in 0..20 {
        let (status, _) = swarm
            .post("/api/tasks", json!({"title": format!("t{i}")}))
            .await;
        assert_eq!(status, 201);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let answer = swarm.get("/api/metrics").await;
    assert_error(&answer, 503, "unavailable");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SWARM_METRICS_URL")
    );
    assert_error(&swarm.get("/metrics").await, 503, "unavailable");
    swarm.stop().await;
}

swarm_kit::conformance!(every_process_reports_and_the_figures_add_up,);

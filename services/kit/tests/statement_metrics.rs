//! Database statements are counted into the registry of the service whose work runs them, on
//! SQLite too, where statements run on a thread of their own: in background work and in
//! requests alike. (Telemetry is process-wide, so this file is its own test binary.)

use std::sync::Arc;

use swarm_kit::metrics::{Registry, names};
use swarm_proto::metrics::v1 as pb;

/// Returns how many statements `registry` has counted.
fn statements(registry: &Registry) -> u64 {
    registry
        .report()
        .families
        .iter()
        .filter(|family| family.name == names::DB_QUERY_DURATION.name)
        .flat_map(|family| &family.series)
        .map(|series: &pb::Series| series.bucket_counts.iter().sum::<u64>())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_count_for_the_service_whose_work_runs_them() {
    swarm_kit::telemetry::init_with("swarm-kit-test", None);
    let path = std::env::temp_dir().join(format!("swarm-kit-statements-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    let pool = swarm_kit::db::connect(&url, 2, swarm_kit::db::DEFAULT_SLOW_QUERY)
        .await
        .unwrap();
    let swarm_kit::db::Pool::Sqlite(pools) = &pool else {
        unreachable!("a sqlite url opens sqlite pools")
    };
    let readers = pools.readers.clone();
    let (background, other) = (Registry::new("background"), Registry::new("other"));

    let run = |registry: Arc<Registry>| {
        let readers = readers.clone();
        async move {
            registry
                .scope_background(async move {
                    for _ in 0..3 {
                        sqlx::query("SELECT 1").execute(&readers).await.unwrap();
                    }
                })
                .await;
        }
    };
    tokio::spawn(run(Arc::clone(&background))).await.unwrap();
    // The three, and the set-up of the connection they opened.
    let counted = statements(&background);
    assert!(counted >= 3, "{counted}");
    assert_eq!(
        statements(&other),
        0,
        "statements count only where they ran"
    );

    // Outside any service's work, a statement counts nowhere.
    sqlx::query("SELECT 1").execute(&readers).await.unwrap();
    assert_eq!(statements(&background) + statements(&other), counted);

    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

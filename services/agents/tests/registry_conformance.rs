//! One conformance suite for agent storage, run against every backend (SQLite and a real
//! PostgreSQL) through the registry the service uses: registration and unique names, updates,
//! deletion, heartbeats and the liveness they give (the same on replicas whose clocks
//! disagree), and list filters. How busy agents are is the gateway's join with the tasks
//! service; the end-to-end tests check it.

use std::sync::Arc;
use std::time::Duration;

use swarm_agents::domain::{Agent, AgentFilter, AgentRegistry, AgentUpdate, Liveness, NewAgent};
use swarm_agents::error::AgentError;
use swarm_agents::storage;
use swarm_kit::clock::Clock;
use swarm_kit::page::Page;
use swarm_kit::testing::{Backend, TestDatabase};
use uuid::Uuid;

struct Fixture {
    registry: AgentRegistry,
    database: TestDatabase,
}

impl Fixture {
    /// Registers `agent`, which must succeed, and returns it as stored.
    async fn add(&self, agent: NewAgent) -> Agent {
        self.registry.register(agent).await.unwrap().agent
    }
}

const TTL: Duration = Duration::from_millis(400);

async fn fixture(backend: Backend) -> Fixture {
    let database = TestDatabase::new(backend).await;
    Fixture {
        registry: replica(&database, Clock::new()).await,
        database,
    }
}

/// A registry over the fixture's database, telling time by `clock` once synced.
async fn replica(database: &TestDatabase, clock: Arc<Clock>) -> AgentRegistry {
    let store = storage::open(database.pool())
        .await
        .expect("migrations apply");
    clock
        .sync(&database.pool())
        .await
        .expect("the database tells the time");
    AgentRegistry::new(store, TTL, clock)
}

fn named(name: &str, capabilities: &[&str]) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        kind: "worker".into(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        config: r#"{"model":"small"}"#.into(),
        max_concurrency: 2,
    }
}

async fn registration_keeps_every_field_and_names_are_unique(backend: Backend) {
    let f = fixture(backend).await;
    let view = f
        .registry
        .register(named("alpha", &["gpu", "echo", "gpu"]))
        .await
        .unwrap();
    assert_eq!(view.liveness, Liveness::Online);
    let read = f.registry.get(view.agent.id).await.unwrap();
    assert_eq!(read.agent, view.agent);
    assert_eq!(read.agent.capabilities, ["echo", "gpu"]);
    assert_eq!(
        (read.agent.kind.as_str(), read.agent.max_concurrency),
        ("worker", 2)
    );
    assert_eq!(
        f.registry.config(view.agent.id).await.unwrap(),
        r#"{"model":"small"}"#
    );

    let taken = f.registry.register(named("alpha", &[])).await;
    assert!(matches!(taken, Err(AgentError::NameTaken(name)) if name == "alpha"));
    let invalid = f
        .registry
        .register(NewAgent {
            max_concurrency: 0,
            ..named("beta", &[])
        })
        .await;
    assert!(matches!(invalid, Err(AgentError::Invalid(_))));
    let (_, total) = f
        .registry
        .list(&AgentFilter::default(), Some(Page::default()))
        .await
        .unwrap();
    assert_eq!(total, 1, "failed registrations store nothing");
    assert!(matches!(
        f.registry.get(Uuid::now_v7()).await,
        Err(AgentError::NotFound(_))
    ));
}

async fn updates_change_only_what_they_name(backend: Backend) {
    let f = fixture(backend).await;
    let alpha = f.add(named("alpha", &["echo"])).await;
    f.registry.register(named("beta", &[])).await.unwrap();
    let update = AgentUpdate {
        capabilities: Some(vec!["sleep".into()]),
        max_concurrency: Some(4),
        ..AgentUpdate::default()
    };
    let updated = f.registry.update(alpha.id, update).await.unwrap().agent;
    assert_eq!(
        (updated.capabilities.clone(), updated.max_concurrency),
        (vec!["sleep".to_owned()], 4)
    );
    assert_eq!(
        (updated.name.as_str(), updated.config.as_str()),
        ("alpha", alpha.config.as_str())
    );
    assert!(updated.updated_at >= alpha.updated_at);

    let rename = AgentUpdate {
        name: Some("beta".into()),
        ..AgentUpdate::default()
    };
    assert!(matches!(
        f.registry.update(alpha.id, rename).await,
        Err(AgentError::NameTaken(_))
    ));
    let config = AgentUpdate {
        config: Some("[]".into()),
        ..AgentUpdate::default()
    };
    assert!(matches!(
        f.registry.update(alpha.id, config).await,
        Err(AgentError::Invalid(_))
    ));
    let missing = f
        .registry
        .update(Uuid::now_v7(), AgentUpdate::default())
        .await;
    assert!(matches!(missing, Err(AgentError::NotFound(_))));
}

async fn deleted_agents_are_gone(backend: Backend) {
    let f = fixture(backend).await;
    let alpha = f.add(named("alpha", &[])).await;
    f.registry.delete(alpha.id).await.unwrap();
    assert!(matches!(
        f.registry.get(alpha.id).await,
        Err(AgentError::NotFound(_))
    ));
    assert!(matches!(
        f.registry.delete(alpha.id).await,
        Err(AgentError::NotFound(_))
    ));
    assert!(matches!(
        f.registry.heartbeat(alpha.id).await,
        Err(AgentError::NotFound(_))
    ));
    // The name is free again.
    f.registry.register(named("alpha", &[])).await.unwrap();
}

async fn liveness_follows_heartbeats(backend: Backend) {
    let f = fixture(backend).await;
    let alpha = f.add(named("alpha", &[])).await;
    assert_eq!(
        f.registry.get(alpha.id).await.unwrap().liveness,
        Liveness::Online
    );
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(
        f.registry.get(alpha.id).await.unwrap().liveness,
        Liveness::Offline
    );
    let revived = f.registry.heartbeat(alpha.id).await.unwrap();
    assert_eq!(revived.liveness, Liveness::Online);
    assert!(revived.agent.last_heartbeat_at > alpha.last_heartbeat_at);
}

async fn replicas_with_skewed_clocks_agree_on_liveness(backend: Backend) {
    const ONE_MINUTE: i64 = 60_000;
    let f = fixture(backend).await;
    let ahead = replica(&f.database, Clock::skewed(ONE_MINUTE)).await;
    let behind = replica(&f.database, Clock::skewed(-ONE_MINUTE)).await;
    let agent = behind.register(named("steady", &[])).await.unwrap().agent;
    assert_eq!(
        ahead.get(agent.id).await.unwrap().liveness,
        Liveness::Online,
        "a heartbeat recorded by a replica behind is fresh to a replica ahead"
    );
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(
        behind.get(agent.id).await.unwrap().liveness,
        Liveness::Offline,
        "and stale to the replica behind once the ttl passed"
    );
    let revived = ahead.heartbeat(agent.id).await.unwrap().agent;
    assert!((revived.last_heartbeat_at - f.registry.now_millis()).abs() < 1_000);
}

async fn lists_filter_by_liveness_and_capability(backend: Backend) {
    let f = fixture(backend).await;
    let old = f.add(named("old", &["echo"])).await;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let gpu = f.add(named("gpu", &["echo", "gpu"])).await;
    let idle = f.add(named("idle", &["sleep"])).await;

    let ids = |views: Vec<swarm_agents::domain::AgentView>| {
        views.into_iter().map(|v| v.agent.id).collect::<Vec<_>>()
    };
    let by = |liveness, capability: Option<&str>| AgentFilter {
        liveness,
        capability: capability.map(str::to_owned),
    };
    let (all, total) = f
        .registry
        .list(&by(None, None), Some(Page::default()))
        .await
        .unwrap();
    assert_eq!((ids(all), total), (vec![old.id, gpu.id, idle.id], 3));
    let (offline, _) = f
        .registry
        .list(&by(Some(Liveness::Offline), None), Some(Page::default()))
        .await
        .unwrap();
    assert_eq!(ids(offline), [old.id]);
    let (online, total) = f
        .registry
        .list(
            &by(Some(Liveness::Online), None),
            Some(Page::new(2, 1).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!((ids(online), total), (vec![idle.id], 2));
    let (every_online, total) = f
        .registry
        .list(&by(Some(Liveness::Online), None), None)
        .await
        .unwrap();
    assert_eq!((ids(every_online), total), (vec![gpu.id, idle.id], 2));
    let (echo, total) = f
        .registry
        .list(&by(None, Some("echo")), Some(Page::new(2, 1).unwrap()))
        .await
        .unwrap();
    assert_eq!((ids(echo), total), (vec![gpu.id], 2));

    let many = f
        .registry
        .get_many(&[idle.id, Uuid::now_v7(), old.id])
        .await
        .unwrap();
    let mut found = ids(many);
    found.sort();
    let mut expected = vec![idle.id, old.id];
    expected.sort();
    assert_eq!(found, expected);
}

/// A worker that restarts under its name gets its agent back, as it declares itself now,
/// online at once; its config (set by an operator) stays.
async fn a_taken_name_resumes_its_agent(backend: Backend) {
    let f = fixture(backend).await;
    let first = f
        .registry
        .register_or_resume(named("phoenix", &["echo"]))
        .await
        .unwrap()
        .agent;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(
        f.registry.get(first.id).await.unwrap().liveness,
        Liveness::Offline
    );
    let declared = NewAgent {
        kind: "rewritten".into(),
        config: r#"{"model":"ignored"}"#.into(),
        max_concurrency: 5,
        ..named("phoenix", &["gpu"])
    };
    let resumed = f.registry.register_or_resume(declared).await.unwrap();
    assert_eq!(resumed.agent.id, first.id);
    assert_eq!(
        resumed.liveness,
        Liveness::Online,
        "resuming counts as a heartbeat"
    );
    assert_eq!(
        (
            resumed.agent.kind.as_str(),
            resumed.agent.capabilities.clone(),
            resumed.agent.max_concurrency,
            resumed.agent.config.as_str()
        ),
        (
            "rewritten",
            vec!["gpu".to_owned()],
            5,
            r#"{"model":"small"}"#
        )
    );
    let taken = f.registry.register(named("phoenix", &[])).await;
    assert!(
        matches!(taken, Err(AgentError::NameTaken(_))),
        "plain registration still refuses"
    );
}

swarm_kit::conformance!(
    a_taken_name_resumes_its_agent,
    registration_keeps_every_field_and_names_are_unique,
    updates_change_only_what_they_name,
    deleted_agents_are_gone,
    liveness_follows_heartbeats,
    replicas_with_skewed_clocks_agree_on_liveness,
    lists_filter_by_liveness_and_capability,
);

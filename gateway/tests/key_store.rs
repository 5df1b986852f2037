//! The key registry over every storage backend: keys are issued once with a secret that checks,
//! stored only as a hash, listed without secrets, revoked at once; the first admin key is
//! issued only when none is active, and `SWARM_ADMIN_KEY` is stored once.

use swarm_gateway::auth::{KeyRegistry, NewKey, Role};
use swarm_kit::page::Page;
use swarm_kit::testing::{Backend, TestDatabase};

async fn registry(backend: Backend) -> (TestDatabase, KeyRegistry) {
    let database = TestDatabase::new(backend).await;
    let pool = swarm_kit::db::connect(database.url(), 4, swarm_kit::db::DEFAULT_SLOW_QUERY)
        .await
        .unwrap();
    let store = swarm_gateway::auth::storage::open(pool).await.unwrap();
    (database, KeyRegistry::new(store))
}

async fn issued_keys_check_until_revoked(backend: Backend) {
    let (_database, keys) = registry(backend).await;
    let agent = uuid::Uuid::now_v7();
    let (key, secret) = keys
        .create(NewKey {
            name: "worker".into(),
            role: Role::Agent,
            agent_id: Some(agent),
        })
        .await
        .unwrap();
    assert!(secret.starts_with(&key.prefix));
    let caller = keys
        .check(&secret)
        .await
        .unwrap()
        .expect("the secret checks");
    assert_eq!(
        (caller.role, caller.agent_id, caller.name.as_str()),
        (Role::Agent, Some(agent), "worker")
    );
    assert!(keys.check("swarm_wrong").await.unwrap().is_none());

    let (listed, total) = keys.list(Page::default()).await.unwrap();
    assert_eq!((total, listed[0].id), (1, key.id));
    let revoked = keys.revoke(key.id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(
        keys.check(&secret).await.unwrap().is_none(),
        "revocation takes effect at once"
    );
    assert!(keys.revoke(uuid::Uuid::now_v7()).await.unwrap().is_none());
}

async fn bad_keys_are_refused_and_change_nothing(backend: Backend) {
    let (_database, keys) = registry(backend).await;
    for bad in [
        NewKey {
            name: " ".into(),
            role: Role::Client,
            agent_id: None,
        },
        NewKey {
            name: "a".into(),
            role: Role::Agent,
            agent_id: None,
        },
        NewKey {
            name: "a".into(),
            role: Role::Client,
            agent_id: Some(uuid::Uuid::now_v7()),
        },
    ] {
        assert!(keys.create(bad).await.is_err());
    }
    assert_eq!(keys.list(Page::default()).await.unwrap().1, 0);
}

async fn the_first_admin_key_is_issued_once(backend: Backend) {
    let (_database, keys) = registry(backend).await;
    let first = keys
        .bootstrap(None)
        .await
        .unwrap()
        .expect("a first admin key");
    assert_eq!(keys.check(&first).await.unwrap().unwrap().role, Role::Admin);
    assert!(
        keys.bootstrap(None).await.unwrap().is_none(),
        "an admin key exists"
    );

    let given = "swarm_given_by_automation_0123456789abcdef";
    assert!(keys.bootstrap(Some(given)).await.unwrap().is_none());
    assert!(
        keys.bootstrap(Some(given)).await.unwrap().is_none(),
        "stored once"
    );
    let caller = keys.check(given).await.unwrap().unwrap();
    assert_eq!(caller.role, Role::Admin);
    assert_eq!(keys.list(Page::default()).await.unwrap().1, 2);
    keys.revoke(caller.key_id).await.unwrap();
    keys.bootstrap(Some(given)).await.unwrap();
    assert!(
        keys.check(given).await.unwrap().is_none(),
        "a revoked given key stays revoked"
    );
    assert!(keys.bootstrap(Some("short")).await.is_err());
}

swarm_kit::conformance!(
    issued_keys_check_until_revoked,
    bad_keys_are_refused_and_change_nothing,
    the_first_admin_key_is_issued_once,
);

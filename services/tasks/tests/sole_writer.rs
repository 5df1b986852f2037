//! A sole-writer tasks service, on PostgreSQL (an advisory lock) and on SQLite (a lock file):
//! it holds every other tasks service off its database, serves task reads from memory while
//! it provably writes alone, moves a task's cached state on with every write it makes, and
//! goes back to the database once it loses its lock.

use std::sync::Arc;
use std::time::Duration;

use swarm_kit::db::Pool;
use swarm_kit::testing::{Backend, TestDatabase};
use swarm_tasks::domain::NewTask;
use swarm_tasks::storage::current::{CurrentStore, SoleWriter};
use swarm_tasks::storage::{self, Insertion, JoinError, TaskStore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn postgres() -> (TestDatabase, sqlx::PgPool) {
    let database = TestDatabase::new(Backend::Postgres).await;
    let Pool::Postgres(pool) = database.pool() else {
        unreachable!("a PostgreSQL test database")
    };
    (database, pool)
}

/// Changes a task's title behind the service's back, as nothing in Swarm does.
async fn retitle(pool: &sqlx::PgPool, id: Uuid, title: &str) {
    sqlx::query("UPDATE tasks SET title = $1 WHERE id = $2")
        .bind(title)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// Creates a task titled "first" through `store` and returns its id.
async fn first_task(store: &dyn TaskStore) -> Uuid {
    let Insertion::Created(created) = store
        .insert(
            &NewTask {
                title: "first".into(),
                ..NewTask::default()
            },
            None,
            1,
        )
        .await
        .unwrap()
    else {
        panic!("a task is created")
    };
    created[0].id
}

/// Reads are served from memory (a title changed behind the store's back stays unseen), and
/// the store's own write moves the task's cached state on.
async fn reads_come_from_memory_and_writes_move_them_on(
    store: &dyn TaskStore,
    id: Uuid,
    retitle: impl AsyncFn(&str),
) {
    assert_eq!(title(store, id).await, "first");
    retitle("behind its back").await;
    assert_eq!(
        title(store, id).await,
        "first",
        "a read is served from memory while it writes alone"
    );
    let cancelled = store
        .cancel(id, 2)
        .await
        .unwrap()
        .expect("a queued task cancels");
    assert_eq!(cancelled.title, "behind its back");
    let read = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.title.as_str()),
        (cancelled.status, "behind its back"),
        "its own write moves the cached state on"
    );
}

async fn title(store: &dyn TaskStore, id: Uuid) -> String {
    store.get(id).await.unwrap().expect("the task exists").title
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sole_writer_serves_current_reads_from_memory_until_it_loses_its_lock() {
    let (database, pool) = postgres().await;
    let inner = storage::open(database.pool()).await.unwrap();
    let sole = Arc::new(SoleWriter::default());
    let mut lock = storage::join_writers(&pool, Some(&sole)).await.unwrap();
    assert!(sole.term().is_some(), "it writes alone");
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut lock)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(storage::keep_writer_lock(
        lock,
        Some(Arc::clone(&sole)),
        stop.clone(),
    ));

    let another = SoleWriter::default();
    assert!(matches!(
        storage::join_writers(&pool, Some(&another)).await,
        Err(JoinError::NotAlone)
    ));
    assert!(
        matches!(
            storage::join_writers(&pool, None).await,
            Err(JoinError::SoleWriterRuns)
        ),
        "no other tasks service joins while it runs"
    );

    let store = CurrentStore::new(inner, Arc::clone(&sole), 1 << 20);
    let id = first_task(&store).await;
    reads_come_from_memory_and_writes_move_them_on(&store, id, async |title| {
        retitle(&pool, id, title).await;
    })
    .await;

    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(backend)
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while sole.term().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a lost lock ends sole writing within its lease");
    retitle(&pool, id, "after the lock").await;
    assert_eq!(
        title(&store, id).await,
        "after the lock",
        "without its lock, reads go to the database"
    );
    storage::join_writers(&pool, None)
        .await
        .expect("other tasks services may join once it is gone");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sole_writer_on_sqlite_holds_a_lock_file_and_serves_reads_from_memory() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let Pool::Sqlite(pools) = database.pool() else {
        unreachable!("a SQLite test database")
    };
    let inner = storage::open(database.pool()).await.unwrap();
    let sole = Arc::new(SoleWriter::default());
    let lock = storage::join_sqlite_writers(&pools, Some(&sole))
        .await
        .unwrap()
        .expect("a database file has a lock file");
    assert!(sole.term().is_some(), "it writes alone");
    assert!(matches!(
        storage::join_sqlite_writers(&pools, Some(&SoleWriter::default())).await,
        Err(JoinError::NotAlone)
    ));
    assert!(
        matches!(
            storage::join_sqlite_writers(&pools, None).await,
            Err(JoinError::SoleWriterRuns)
        ),
        "no other tasks service joins while it runs"
    );

    let store = CurrentStore::new(inner, Arc::clone(&sole), 1 << 20);
    let id = first_task(&store).await;
    reads_come_from_memory_and_writes_move_them_on(&store, id, async |title| {
        sqlx::query("UPDATE tasks SET title = ? WHERE id = ?")
            .bind(title)
            .bind(id)
            .execute(&pools.writer)
            .await
            .unwrap();
    })
    .await;

    sole.end();
    drop(lock);
    sqlx::query("UPDATE tasks SET title = 'after the lock' WHERE id = ?")
        .bind(id)
        .execute(&pools.writer)
        .await
        .unwrap();
    assert_eq!(
        title(&store, id).await,
        "after the lock",
        "without its lock, reads go to the database"
    );
    storage::join_sqlite_writers(&pools, None)
        .await
        .expect("other tasks services may join once it is gone");
}

//! Database connections: one `DATABASE_URL` picks SQLite (embedded, a file created on first use)
//! or PostgreSQL, and each service applies only its own migrations, so several services share one
//! database without stepping on each other.
//!
//! SQLite allows one writer at a time; writers that collide sleep in its busy handler, which
//! wrecks tail latency under load. So SQLite gets two pools: readers, and a single writer
//! connection that queues writes fairly in process. Its write-ahead log is copied back into
//! the database file beside the writer, four times a second, so a committing write seldom
//! waits for that copy and its fsync, and a log grown past 256 MiB is truncated.

use std::str::FromStr;
use std::time::Duration;

use crate::config::{
    ConfigError, check_database_url, check_not_zero, override_from_env, override_millis,
};

use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// How long a caller waits for a pooled connection before the database counts as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection pool on one of the supported backends.
#[derive(Debug, Clone)]
pub enum Pool {
    /// An embedded SQLite file.
    Sqlite(SqlitePools),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// The pools of one SQLite file: many readers (WAL lets them run beside the writer) and one
/// writer.
#[derive(Debug, Clone)]
pub struct SqlitePools {
    /// Connections for statements that only read.
    pub readers: SqlitePool,
    /// The one connection for statements that write.
    pub writer: SqlitePool,
}

impl Pool {
    /// Returns the backend name, for logs and health answers.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pools) => sqlx::query("SELECT 1")
                .execute(&pools.readers)
                .await
                .map(drop),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }

    /// Reports the pool's connections (open, in use, idle) into `registry` before each report.
    pub fn report_to(&self, registry: &crate::metrics::Registry) {
        use crate::metrics::names;
        let gauges = [
            registry.gauge(&names::DB_POOL_SIZE, &[]),
            registry.gauge(&names::DB_POOL_IN_USE, &[]),
            registry.gauge(&names::DB_POOL_IDLE, &[]),
        ];
        let pool = self.clone();
        registry.on_collect(move || {
            let (size, idle) = pool.connections();
            for (gauge, value) in gauges.iter().zip([size, size.saturating_sub(idle), idle]) {
                gauge.set(f64::from(value));
            }
        });
    }

    /// Returns the connections open and idle, over every pool of the backend.
    fn connections(&self) -> (u32, u32) {
        let idle = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
        match self {
            Self::Sqlite(pools) => (
                pools.readers.size() + pools.writer.size(),
                idle(pools.readers.num_idle()) + idle(pools.writer.num_idle()),
            ),
            Self::Postgres(pool) => (pool.size(), idle(pool.num_idle())),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pools) => {
                pools.readers.close().await;
                pools.writer.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// The default slow-query threshold.
pub const DEFAULT_SLOW_QUERY: Duration = Duration::from_millis(100);

/// The embedded default database: a SQLite file under `./data/`.
pub const DEFAULT_URL: &str = "sqlite://data/swarm.db";

/// Where a process keeps its tables and how its pool behaves, read the same way by every role
/// that has a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://...` (`SWARM_<ROLE>_DATABASE_URL`, else `DATABASE_URL`).
    pub url: String,
    /// Most pooled connections (`SWARM_DB_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Statements slower than this are logged with their text and counted
    /// (`SWARM_SLOW_QUERY_MS`).
    pub slow_query: Duration,
}

impl DatabaseConfig {
    /// The embedded default database with a pool of at most `max_connections`.
    pub fn local(max_connections: u32) -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            max_connections,
            slow_query: DEFAULT_SLOW_QUERY,
        }
    }

    /// Returns this configuration with its database at `url`.
    #[must_use]
    pub fn at(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Overrides the fields from the environment; `role` names the process's own URL variable
    /// (`SWARM_<ROLE>_DATABASE_URL`), which wins over the shared `DATABASE_URL`.
    pub fn read_env(&mut self, role: &str) -> Result<(), ConfigError> {
        let own = format!("SWARM_{}_DATABASE_URL", role.to_ascii_uppercase());
        override_from_env(&mut self.url, &[own.as_str(), "DATABASE_URL"])?;
        override_from_env(&mut self.max_connections, &["SWARM_DB_MAX_CONNECTIONS"])?;
        override_millis(&mut self.slow_query, "SWARM_SLOW_QUERY_MS")
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_database_url("DATABASE_URL", &self.url)?;
        check_not_zero("SWARM_DB_MAX_CONNECTIONS", self.max_connections == 0)
    }

    /// Opens the pool.
    pub async fn connect(&self) -> Result<Pool, sqlx::Error> {
        connect(&self.url, self.max_connections, self.slow_query).await
    }
}

/// Tells whether a PostgreSQL `url`, or the `PGSSLMODE` environment variable, says whether to
/// use TLS.
fn names_ssl_mode(url: &str) -> bool {
    let in_url = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("sslmode=")));
    in_url || std::env::var_os("PGSSLMODE").is_some()
}

/// Opens a pool for `url` (`sqlite://path` or `postgres://...`) with at most `max_connections`;
/// statements slower than `slow_query` are logged as warnings with their text (and counted, see
/// [`crate::metrics::db`]).
///
/// A SQLite file and its directory are created when missing, in WAL mode so readers never wait
/// for the writer.
pub async fn connect(
    url: &str,
    max_connections: u32,
    slow_query: Duration,
) -> Result<Pool, sqlx::Error> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?
            .log_slow_statements(log::LevelFilter::Warn, slow_query)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let writer = open_sqlite(&options, 1).await?;
        let readers = open_sqlite(
            &options
                .clone()
                .pragma("cache_size", READER_CACHE_KIB.to_string()),
            max_connections.min(sqlite_reader_limit()),
        )
        .await?;
        tokio::spawn(checkpoint_until_closed(readers.clone()));
        Ok(Pool::Sqlite(SqlitePools { readers, writer }))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let mut options = PgConnectOptions::from_str(url)?
            .log_slow_statements(log::LevelFilter::Warn, slow_query);
        if !names_ssl_mode(url) {
            // sqlx would prefer TLS when the server offers it, as libpq does; encrypting every
            // statement to a server on the same host or network costs about 40 % of write
            // throughput, so TLS is used when asked for (`sslmode`, or `PGSSLMODE`).
            options = options.ssl_mode(PgSslMode::Disable);
        }
        connect_postgres(options, max_connections)
            .await
            .map(Pool::Postgres)
    } else {
        Err(sqlx::Error::Configuration(
            "database url must start with sqlite: or postgres:".into(),
        ))
    }
}

/// Each reader's page cache, in KiB, as SQLite's `cache_size` takes it (negative: a size, not
/// a page count). A page a reader does not hold is read from the operating system's file
/// cache, which every connection shares; SQLite's default (2,000 KiB) in each of a service's
/// readers would keep up to that much again of the same pages per connection (32 MiB with
/// 16 readers) resident in the process.
const READER_CACHE_KIB: i64 = -512;

/// The most readers a SQLite pool opens: twice the cores, and no fewer than
/// [`MIN_SQLITE_READERS`]. A SQLite read runs on the process's own CPU, so readers past that
/// only wait their turn, each holding its page cache and its prepared statements (about
/// 1.7 MiB: 16 readers on 2 cores kept 20 MiB more resident in the tasks service than 4 did, for
/// the same throughput).
fn sqlite_reader_limit() -> u32 {
    let twice_the_cores = std::thread::available_parallelism().map_or(0, |cores| {
        u32::try_from(cores.get())
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
    });
    twice_the_cores.max(MIN_SQLITE_READERS)
}

/// Readers a SQLite pool may open however few the cores: a task list holds two at once (its
/// page and its count), and the gateway lets four key lookups reach its store together.
const MIN_SQLITE_READERS: u32 = 4;

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// The log length (in pages) past which a checkpoint also truncates the log, waiting briefly
/// for readers and the writer: under constant reads the log can otherwise only grow.
const TRUNCATE_AFTER_PAGES: i64 = 65_536;

/// Copies the write-ahead log back into the database file every [`CHECKPOINT_INTERVAL`]
/// through `readers` until the pool closes. A passive checkpoint waits for nobody, so the
/// committing writer seldom has to copy (and fsync) on its own; a log grown past
/// [`TRUNCATE_AFTER_PAGES`] is truncated.
async fn checkpoint_until_closed(readers: SqlitePool) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if readers.is_closed() {
            return;
        }
        let passive: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&readers)
            .await;
        let outcome = match passive {
            Ok((_, log_pages, _)) if log_pages > TRUNCATE_AFTER_PAGES => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&readers)
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "wal checkpoint failed");
        }
    }
}

/// Opens a SQLite pool. Services that start together on a new file race to switch it to WAL,
/// which SQLite answers with "database is locked" at once rather than waiting; such an open is
/// retried for a few seconds.
async fn open_sqlite(
    options: &SqliteConnectOptions,
    max_connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match opened {
            Err(error) if attempt < ATTEMPTS && is_locked(&error) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Tells whether SQLite refused because another connection holds a lock (`SQLITE_BUSY`, 5, or
/// `SQLITE_LOCKED`, 6).
fn is_locked(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .is_some_and(|code| code == "5" || code == "6")
}

/// Opens a PostgreSQL pool with Swarm's pool settings.
pub async fn connect_postgres(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

/// How often SQLite migrations are tried when another process migrates the same file at once.
const SQLITE_MIGRATION_TRIES: u32 = 10;

/// Applies a service's migrations, recorded in the service's own history table
/// (`_swarm_<service>_migrations`), so services that share one database never see each other's
/// migrations.
///
/// Replicas starting together migrate once: PostgreSQL serializes them with an advisory lock.
/// SQLite has none, so a replica that listed the applied migrations just before another
/// committed one fails that migration (its transaction rolls back, changing nothing) and
/// tries again, when it finds the migration applied. It fails either on the migration's own
/// statements or, when those are idempotent, on recording its version a second time.
pub async fn migrate(
    pool: &Pool,
    service: &str,
    mut migrator: Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    migrator.dangerous_set_table_name(format!("_swarm_{service}_migrations"));
    match pool {
        Pool::Sqlite(pools) => {
            let mut tries = 1;
            loop {
                match migrator.run(&pools.writer).await {
                    Err(error) if lost_migration_race(&error) && tries < SQLITE_MIGRATION_TRIES => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                    }
                    migrated => return migrated,
                }
            }
        }
        Pool::Postgres(pool) => migrator.run(pool).await,
    }
}

/// Tells whether a SQLite migration failed the way one does when another replica applied it
/// meanwhile: on its own statements, or on the version the other recorded first.
fn lost_migration_race(error: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::ExecuteMigration(..) => true,
        MigrateError::Execute(sqlx::Error::Database(error)) => error.is_unique_violation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_migration_recorded_by_another_replica_meanwhile_is_tried_again() {
        use sqlx::migrate::MigrateError;
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE migrations (version BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let record = || sqlx::query("INSERT INTO migrations VALUES (1)").execute(&pool);
        record().await.unwrap();
        let recorded_twice = record().await.unwrap_err();
        assert!(lost_migration_race(&MigrateError::Execute(recorded_twice)));
        let no_such_table = sqlx::query("SELECT * FROM nowhere")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(!lost_migration_race(&MigrateError::Execute(no_such_table)));
        assert!(!lost_migration_race(&MigrateError::VersionMissing(1)));
    }

    /// Whether the connection `pool` hands out is encrypted, as the server sees it.
    #[cfg(feature = "testing")]
    async fn over_tls(pool: &PgPool) -> bool {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn postgres_connects_over_tls_verified_against_the_configured_authority() {
        let server = crate::testing::postgres_server_url();
        let Pool::Postgres(plain) = connect(&server, 1, DEFAULT_SLOW_QUERY).await.unwrap() else {
            unreachable!("a postgres url opens postgres");
        };
        let certificate: String = sqlx::query_scalar("SHOW ssl_cert_file")
            .fetch_one(&plain)
            .await
            .unwrap();
        let enabled: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&plain)
            .await
            .unwrap();
        assert_eq!(
            enabled, "on",
            "the PostgreSQL at {server} must serve TLS (ssl = on)"
        );
        assert!(
            !over_tls(&plain).await,
            "without sslmode, statements are not encrypted though the server offers TLS"
        );
        let separator = if server.contains('?') { '&' } else { '?' };
        let with = |parameters: String| format!("{server}{separator}{parameters}");

        // The server's own certificate as the authority: verified, and encrypted.
        let verified = with(format!("sslmode=verify-ca&sslrootcert={certificate}"));
        let Pool::Postgres(pool) = connect(&verified, 1, DEFAULT_SLOW_QUERY).await.unwrap() else {
            unreachable!("a postgres url opens postgres");
        };
        assert!(over_tls(&pool).await, "sslmode=verify-ca connects over TLS");
        pool.close().await;

        // An authority that did not sign the server's certificate: refused, not trusted.
        let stranger = crate::testing::TestCertificates::new();
        let refused = with(format!(
            "sslmode=verify-ca&sslrootcert={}",
            stranger.ca_file().display()
        ));
        let error = connect(&refused, 1, DEFAULT_SLOW_QUERY).await.unwrap_err();
        assert!(
            error.to_string().to_lowercase().contains("certificate"),
            "refused for its certificate: {error}"
        );
        plain.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_migrating_one_sqlite_file_together_all_succeed() {
        let path =
            std::env::temp_dir().join(format!("swarm-kit-migrate-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let migrations =
            std::env::temp_dir().join(format!("swarm-kit-migrations-{}", std::process::id()));
        std::fs::create_dir_all(&migrations).unwrap();
        for n in 1..=5 {
            std::fs::write(
                migrations.join(format!("000{n}_table.sql")),
                format!("CREATE TABLE t{n} (id INTEGER PRIMARY KEY); CREATE INDEX t{n}_idx ON t{n} (id);"),
            )
            .unwrap();
        }
        let replicas: Vec<_> = (0..6)
            .map(|_| {
                let (url, migrations) = (url.clone(), migrations.clone());
                tokio::spawn(async move {
                    let pool = connect(&url, 2, DEFAULT_SLOW_QUERY).await.unwrap();
                    let migrator = Migrator::new(migrations.as_path()).await.unwrap();
                    let migrated = migrate(&pool, "race", migrator).await;
                    pool.close().await;
                    migrated
                })
            })
            .collect();
        for replica in replicas {
            replica.await.unwrap().expect("every replica migrates");
        }
        let _ = std::fs::remove_dir_all(&migrations);
        remove_sqlite_files(&path);
    }

    /// Removes a SQLite database file and its write-ahead log files.
    fn remove_sqlite_files(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// The page cache a SQLite connection keeps (negative: in KiB).
    async fn cache_size(connection: &mut sqlx::SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(connection)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn sqlite_readers_keep_a_small_page_cache_and_the_writer_the_default() {
        let path = std::env::temp_dir().join(format!("swarm-kit-cache-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let Pool::Sqlite(pools) = connect(&url, 3, DEFAULT_SLOW_QUERY).await.unwrap() else {
            unreachable!("a sqlite url opens sqlite");
        };
        // Every reader is held at once, so each one's setting is read.
        let mut readers = Vec::new();
        for _ in 0..3 {
            let mut reader = pools.readers.acquire().await.unwrap();
            assert_eq!(cache_size(&mut reader).await, READER_CACHE_KIB);
            readers.push(reader);
        }
        let mut writer = pools.writer.acquire().await.unwrap();
        assert_eq!(cache_size(&mut writer).await, -2000, "SQLite's default");
        drop((readers, writer));
        pools.readers.close().await;
        pools.writer.close().await;
        remove_sqlite_files(&path);
    }

    /// How many readers a SQLite pool at `url` opens at most when `asked` for.
    async fn readers_opened(url: &str, asked: u32) -> u32 {
        let pool = connect(url, asked, DEFAULT_SLOW_QUERY).await.unwrap();
        let Pool::Sqlite(pools) = &pool else {
            unreachable!("a sqlite url opens sqlite");
        };
        let readers = pools.readers.options().get_max_connections();
        pool.close().await;
        readers
    }

    #[tokio::test]
    async fn a_sqlite_pool_opens_no_more_readers_than_twice_the_cores_and_at_least_four() {
        let path =
            std::env::temp_dir().join(format!("swarm-kit-readers-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            usize::try_from(readers_opened(&url, 1000).await).unwrap(),
            (2 * cores).max(usize::try_from(MIN_SQLITE_READERS).unwrap())
        );
        assert_eq!(
            readers_opened(&url, 1).await,
            1,
            "a smaller pool asked for is kept"
        );
        remove_sqlite_files(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn services_opening_a_new_sqlite_file_together_all_succeed() {
        for round in 0..20 {
            let path = std::env::temp_dir()
                .join(format!("swarm-kit-race-{}-{round}.db", std::process::id()));
            let url = format!("sqlite://{}", path.display());
            let opens: Vec<_> = (0..8)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { connect(&url, 2, DEFAULT_SLOW_QUERY).await })
                })
                .collect();
            for open in opens {
                let pool = open.await.unwrap().expect("every service opens the file");
                pool.close().await;
            }
            remove_sqlite_files(&path);
        }
    }
}

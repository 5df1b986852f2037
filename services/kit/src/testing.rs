//! Test helpers (feature `testing`): throwaway databases on every backend, so one conformance
//! suite runs against SQLite and a real PostgreSQL.
//!
//! PostgreSQL comes from `SWARM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets its own schema, dropped afterwards.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::Executor;
use sqlx::postgres::PgConnectOptions;

use crate::db::{self, Pool};

/// The PostgreSQL server tests use unless `SWARM_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The database backends a conformance suite covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the temporary directory.
    Sqlite,
    /// A fresh schema on a PostgreSQL server.
    Postgres,
}

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    pool: Pool,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    File(PathBuf),
    Schema { server_url: String, schema: String },
}

/// Returns the PostgreSQL server URL for tests.
pub fn postgres_server_url() -> String {
    std::env::var("SWARM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

impl TestDatabase {
    /// Creates an empty database on `backend`.
    ///
    /// # Panics
    /// When the backend cannot be reached: tests need it.
    pub async fn new(backend: Backend) -> Self {
        let name = format!("swarm_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                let url = format!("sqlite://{}", path.display());
                let pool = db::connect(&url, 8, db::DEFAULT_SLOW_QUERY)
                    .await
                    .expect("sqlite test database opens");
                Self {
                    url,
                    pool,
                    cleanup: Cleanup::File(path),
                }
            }
            Backend::Postgres => {
                let server_url = postgres_server_url();
                let admin = db::connect(&server_url, 1, db::DEFAULT_SLOW_QUERY)
                    .await
                    .unwrap_or_else(|error| panic!("postgres at {server_url} is needed: {error}"));
                if let Pool::Postgres(admin) = &admin {
                    admin
                        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                        .await
                        .expect("test schema is created");
                }
                admin.close().await;
                let separator = if server_url.contains('?') { '&' } else { '?' };
                let url = format!("{server_url}{separator}options=-c%20search_path%3D{name}");
                let options = PgConnectOptions::from_str(&url).expect("test url parses");
                let pool = db::connect_postgres(options, 8)
                    .await
                    .expect("postgres test database opens");
                Self {
                    url,
                    pool: Pool::Postgres(pool),
                    cleanup: Cleanup::Schema {
                        server_url,
                        schema: name,
                    },
                }
            }
        }
    }

    /// Returns a URL that opens this database (for a service's configuration).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns a pool on this database.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }
}

/// How long dropping a test's schema waits for locks before it leaves the schema behind.
const DROP_LOCK_TIMEOUT: &str = "10s";

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Schema { server_url, schema } => {
                let (server_url, schema) = (server_url.clone(), schema.clone());
                // Drop runs inside or outside a runtime; a thread of its own works in both.
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(async {
                        let admin = db::connect(&server_url, 1, db::DEFAULT_SLOW_QUERY)
                            .await
                            .ok()?;
                        if let Pool::Postgres(pool) = &admin {
                            // A connection a test leaked with rows locked must not hang the
                            // suite: past the timeout the schema is left behind (each test has
                            // its own, so it is in no one's way).
                            let sql = format!(
                                "SET lock_timeout = '{DROP_LOCK_TIMEOUT}'; \
                                DROP SCHEMA IF EXISTS {schema} CASCADE"
                            );
                            pool.execute(sqlx::AssertSqlSafe(sql)).await.ok()?;
                        }
                        admin.close().await;
                        Some(())
                    })
                });
                let _ = dropped.join();
            }
        }
    }
}

/// A certificate authority of a test's own and a server certificate it signed for `127.0.0.1`
/// and `localhost`, as PEM text and as files in a directory removed on drop.
#[derive(Debug)]
pub struct TestCertificates {
    directory: PathBuf,
    /// The authority's certificate.
    pub ca_pem: String,
    /// The server's certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl TestCertificates {
    /// Makes a fresh authority and server certificate, and writes them to files.
    ///
    /// # Panics
    /// When a certificate cannot be made or written.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let mut authority = CertificateParams::new(Vec::new()).expect("authority parameters");
        authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        authority
            .distinguished_name
            .push(rcgen::DnType::CommonName, "swarm test authority");
        authority.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let authority_key = KeyPair::generate().expect("a key");
        let ca = authority
            .self_signed(&authority_key)
            .expect("the authority signs itself");
        let issuer = Issuer::new(authority, authority_key);
        let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server parameters");
        server
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().expect("a key");
        let cert = server
            .signed_by(&server_key, &issuer)
            .expect("the authority signs the server");
        let directory =
            std::env::temp_dir().join(format!("swarm_tls_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).expect("a directory for the certificates");
        let certificates = Self {
            directory,
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: server_key.serialize_pem(),
        };
        for (name, pem) in [
            ("ca.pem", &certificates.ca_pem),
            ("server.pem", &certificates.cert_pem),
            ("server.key", &certificates.key_pem),
        ] {
            std::fs::write(certificates.directory.join(name), pem).expect("a certificate file");
        }
        certificates
    }

    /// The authority's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.directory.join("ca.pem")
    }

    /// The server's certificate file.
    pub fn cert_file(&self) -> PathBuf {
        self.directory.join("server.pem")
    }

    /// The server's key file.
    pub fn key_file(&self) -> PathBuf {
        self.directory.join("server.key")
    }
}

impl Default for TestCertificates {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A Redis server of a test's own on a free port, so that killing it disturbs nobody else.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: std::process::Child,
    tls: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port)
    }

    /// Starts `redis-server` on `port` (to restart one that was killed).
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start.
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, None)
    }

    /// Starts `redis-server` on a free port that speaks TLS only, with `certificates`' server
    /// certificate; clients need not present one.
    ///
    /// # Panics
    /// When `redis-server` is not installed, was built without TLS, or does not start.
    pub fn start_tls(certificates: &TestCertificates) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::spawn(port, Some(certificates))
    }

    fn spawn(port: u16, tls: Option<&TestCertificates>) -> Self {
        let mut command = std::process::Command::new("redis-server");
        match tls {
            None => command.args(["--port", &port.to_string()]),
            Some(certificates) => command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(certificates.cert_file())
                .arg("--tls-key-file")
                .arg(certificates.key_file())
                .arg("--tls-ca-cert-file")
                .arg(certificates.ca_file())
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            port,
            child,
            tls: tls.is_some(),
        }
    }

    /// Returns the port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns its URL (`rediss://` when it speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as in a network
    /// partition; what it stores stays, as in a Redis that persists.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server answer again (SIGCONT), with everything it stored.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs each named case once per backend, each as its own test: in a test file,
/// `swarm_kit::conformance!(case_a, case_b);` with `async fn case_a(backend: Backend)` defined
/// there makes the tests `sqlite::case_a`, `postgres::case_a`, and so on.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::testing::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::testing::Backend::Postgres).await;
                }
            )*
        }
    };
}

//! What every Swarm service shares: the error vocabulary, database and pagination helpers,
//! telemetry set-up, the gRPC server bootstrap (health, reflection, graceful shutdown), shutdown
//! signals, process figures, request and database metrics reported to the metrics service, and
//! the cache client with its near cache.

pub mod batching;
pub mod cache_client;
pub mod cache_keys;
pub mod clock;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod grpc;
pub mod host;
pub mod metrics;
pub mod page;
pub mod periodic;
pub mod process;
pub mod replicas;
pub mod rows;
pub mod run;
pub mod service_auth;
pub mod shutdown;
pub mod statistics;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod trace;
pub mod validate;

pub use error::{Error, ErrorCode};
pub use run::RunError;
pub use store::StoreError;

#[cfg(feature = "testing")]
pub mod testing;

//! Why a service or the gateway could not start or stopped with an error.

/// A failure to start or to keep serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database schema could not be brought up to date.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] crate::grpc::ServeError),
    /// Socket or file trouble.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

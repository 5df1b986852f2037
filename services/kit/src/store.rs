//! What a storage backend reports when it fails, in words that do not depend on the driver:
//! storage traits and the domain above them speak [`StoreError`], and each driver's errors are
//! translated into it once, here.

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or has no connection to spare in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database rolled the transaction back to let another through (a deadlock or a
    /// serialization failure): it stored nothing, and trying again may succeed.
    #[error("the database gave the transaction up for another: {0}")]
    Contention(String),
    /// A unique constraint refused the write: what it would store exists already.
    #[error("a unique constraint refused the write: {0}")]
    Conflict(String),
    /// The database refused the statement for another reason (a constraint, a type, a lock).
    #[error("the database refused the statement: {0}")]
    Refused(String),
    /// Anything else: the driver failed, or a stored row could not be read back.
    #[error("storage failed: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                Self::Conflict(database.to_string())
            }
            sqlx::Error::Database(database) if gave_way(database.code().as_deref()) => {
                Self::Contention(database.to_string())
            }
            sqlx::Error::Database(database) if out_of_service(database.as_ref()) => {
                Self::Unavailable(database.to_string())
            }
            sqlx::Error::Database(database) => Self::Refused(database.to_string()),
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Tells whether a PostgreSQL error `code` (SQLSTATE) means the transaction was rolled back
/// for another's sake: `40001` serialization failure, `40P01` deadlock detected.
fn gave_way(code: Option<&str>) -> bool {
    matches!(code, Some("40001" | "40P01"))
}

/// Tells whether `error` says the database is out of service for now, rather than refusing
/// the statement: on PostgreSQL the SQLSTATE classes `08` (connection exception) and `53`
/// (insufficient resources, such as too many connections) and `57P01` to `57P03` (shutting
/// down, restarting after a crash, not yet accepting connections); on SQLite `SQLITE_BUSY`,
/// another writer holding the file past the busy timeout. Retrying later may work.
fn out_of_service(error: &dyn sqlx::error::DatabaseError) -> bool {
    const SQLITE_BUSY: i32 = 5;
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // Extended codes (such as SQLITE_BUSY_SNAPSHOT) keep the primary code in the low byte.
        return code
            .parse::<i32>()
            .is_ok_and(|code| code & 0xff == SQLITE_BUSY);
    }
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(&*code, "57P01" | "57P02" | "57P03")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorCode};

    #[tokio::test]
    async fn driver_failures_keep_their_kind() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE names (name TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let insert = "INSERT INTO names VALUES ('a')";
        sqlx::query(insert).execute(&pool).await.unwrap();
        let twice = StoreError::from(sqlx::query(insert).execute(&pool).await.unwrap_err());
        assert!(matches!(twice, StoreError::Conflict(_)), "{twice:?}");
        assert_eq!(Error::from(twice).code, ErrorCode::AlreadyExists);

        let bad = StoreError::from(sqlx::query("SELECT nope").execute(&pool).await.unwrap_err());
        assert!(matches!(bad, StoreError::Refused(_)), "{bad:?}");
        assert_eq!(Error::from(bad).code, ErrorCode::Internal);

        pool.close().await;
        assert_unavailable(sqlx::query("SELECT 1").execute(&pool).await.unwrap_err());
    }

    /// Asserts that `error` reads as a database out of reach, answered `unavailable`.
    #[track_caller]
    fn assert_unavailable(error: sqlx::Error) {
        let error = StoreError::from(error);
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert_eq!(Error::from(error).code, ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn a_sqlite_file_another_writer_holds_is_unavailable_not_refused() {
        use sqlx::sqlite::SqliteConnectOptions;
        use std::str::FromStr;

        let path = std::env::temp_dir().join(format!("swarm_busy_{}.db", uuid::Uuid::new_v4()));
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_millis(50));
        let holder = sqlx::SqlitePool::connect_with(options.clone())
            .await
            .unwrap();
        let waiter = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE names (name TEXT)")
            .execute(&holder)
            .await
            .unwrap();
        let mut held = holder.begin().await.unwrap();
        sqlx::query("INSERT INTO names VALUES ('a')")
            .execute(&mut *held)
            .await
            .unwrap();
        let busy = sqlx::query("INSERT INTO names VALUES ('b')")
            .execute(&waiter)
            .await
            .unwrap_err();
        assert_unavailable(busy);
        held.rollback().await.unwrap();
        holder.close().await;
        waiter.close().await;
        let _ = std::fs::remove_file(path);
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_postgres_connection_the_server_ends_is_unavailable_not_refused() {
        // A restart or a failover ends every session with `57P01` (admin shutdown), which a
        // session can do to itself.
        let pool = sqlx::PgPool::connect(&crate::testing::postgres_server_url())
            .await
            .unwrap();
        let ended = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&pool)
            .await
            .unwrap_err();
        let code = ended
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("57P01"), "{ended:?}");
        assert_unavailable(ended);
        pool.close().await;
    }
}

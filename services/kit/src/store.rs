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
        let closed = StoreError::from(sqlx::query("SELECT 1").execute(&pool).await.unwrap_err());
        assert!(matches!(closed, StoreError::Unavailable(_)), "{closed:?}");
        assert_eq!(Error::from(closed).code, ErrorCode::Unavailable);
    }
}

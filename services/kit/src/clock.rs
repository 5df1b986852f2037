//! One clock for every replica: the database's. A service reads the database's time when it
//! starts and again every few seconds, and keeps the offset between that time and its own
//! clock; times it stores or compares (lease expiry, due times, heartbeat freshness) are its own
//! clock plus that offset. Replicas whose clocks disagree by minutes so agree within a round
//! trip on who holds what, with no extra statement per use.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::time::now_millis;

/// How often the offset to the database's clock is measured again.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// The database's time in Unix milliseconds, on each backend. SQLite reads the clock of the
/// host it runs on (which is this process's, as SQLite is embedded).
const POSTGRES_NOW: &str = "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
const SQLITE_NOW: &str = "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// A clock that follows the database's.
#[derive(Debug, Default)]
pub struct Clock {
    /// Milliseconds from this process's clock to the database's.
    offset: AtomicI64,
    /// Milliseconds added to this process's clock: always zero but in tests, which skew a
    /// replica to show that nothing depends on its own clock.
    skew: i64,
}

impl Clock {
    /// A clock with this process's time until it is synced.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A clock whose process clock runs `skew_millis` ahead (behind, when negative); for tests.
    pub fn skewed(skew_millis: i64) -> Arc<Self> {
        Arc::new(Self {
            offset: AtomicI64::new(0),
            skew: skew_millis,
        })
    }

    /// Returns the current time in Unix milliseconds on the database's clock.
    pub fn now_millis(&self) -> i64 {
        self.local() + self.offset.load(Ordering::Relaxed)
    }

    /// Measures the offset to `pool`'s clock, taking the database's reading as made halfway
    /// through the round trip.
    pub async fn sync(&self, pool: &Pool) -> Result<(), sqlx::Error> {
        let before = self.local();
        let database: i64 = match pool {
            Pool::Sqlite(pools) => {
                sqlx::query_scalar(SQLITE_NOW)
                    .fetch_one(&pools.readers)
                    .await?
            }
            Pool::Postgres(pool) => sqlx::query_scalar(POSTGRES_NOW).fetch_one(pool).await?,
        };
        let after = self.local();
        let midway = before + (after - before) / 2;
        self.offset.store(database - midway, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs with `pool` every [`SYNC_INTERVAL`] from one interval on (the caller syncs once
    /// at start) until `stop` is cancelled; a failed reading keeps the last offset.
    pub async fn keep_synced(self: Arc<Self>, pool: Pool, stop: CancellationToken) {
        // The caller synced at start: the first look is one interval away.
        crate::periodic::every(SYNC_INTERVAL, stop, || async {
            if let Err(error) = self.sync(&pool).await {
                tracing::debug!(%error, "cannot read the database clock; keeping the last offset");
            }
        })
        .await;
    }

    fn local(&self) -> i64 {
        now_millis() + self.skew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_skewed_clock_reads_the_database_time_once_synced() {
        let pool = crate::db::connect("sqlite::memory:", 1, crate::db::DEFAULT_SLOW_QUERY)
            .await
            .expect("an in-memory database opens");
        let clock = Clock::skewed(-3_600_000);
        assert!(clock.now_millis() < now_millis() - 3_500_000);
        clock.sync(&pool).await.expect("sqlite answers");
        assert!((clock.now_millis() - now_millis()).abs() < 1_000);
    }
}

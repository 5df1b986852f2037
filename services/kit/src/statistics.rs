//! Planner statistics for tables that change faster than autovacuum looks at them.
//!
//! PostgreSQL plans a prepared statement once per connection and plans it again only when the
//! statistics of a table it reads change. Autovacuum refreshes them at most once a minute, so a
//! queue that grows from empty to thousands of tasks within that minute keeps the plans made
//! while it held a handful: `WHERE id = ANY($1)` stays a sequential scan, and every statement
//! reads the whole table. So each service checks its growing tables every second and
//! analyzes those that changed by autovacuum's own measure (a fixed count plus a tenth of the
//! rows) and whose size moved by half since their last analysis; a table that changed in place
//! waits a minute, as it would for autovacuum. Analyzing updates the size the planner reads,
//! and every connection plans its statements on the table again.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;

/// How often the tables are checked: one look at the table statistics views, cheap enough to
/// take every second, so that a queue filling from empty (10,000 tasks within 5 s under load)
/// is planned for its size within a second of each doubling rather than after it drained.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Changed rows that make a table's statistics stale whatever its size (autovacuum's default
/// is 50; a few hundred changes seldom change a plan).
const CHANGED_ROWS: i64 = 500;
/// The fraction of a table's rows whose change makes its statistics stale, as autovacuum's
/// default `autovacuum_analyze_scale_factor`.
const CHANGED_FRACTION: f64 = 0.1;
/// How long a table whose size held is left before it is analyzed again: autovacuum's default
/// `autovacuum_naptime`, so a busy table of steady size is analyzed no more often than
/// autovacuum would.
const STEADY_SIZE_WAIT: Duration = Duration::from_secs(60);

/// The tables among `$1` (in the current schema, that this role may analyze) whose rows
/// changed enough since their last analysis, and whose size doubled or halved since then (or
/// which were analyzed longer than `$4` seconds ago, or never): their names, quoted as SQL
/// needs them.
const STALE_TABLES: &str = "SELECT s.relid::regclass::text FROM pg_stat_user_tables AS s \
    JOIN pg_class AS c ON c.oid = s.relid \
    WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
    AND pg_has_role(c.relowner, 'USAGE') \
    AND s.n_mod_since_analyze > $2 + $3 * GREATEST(c.reltuples, 0) \
    AND (c.reltuples < 0 OR s.n_live_tup > 2 * c.reltuples OR 2 * s.n_live_tup < c.reltuples \
        OR COALESCE(GREATEST(s.last_analyze, s.last_autoanalyze), '-infinity') \
            < now() - make_interval(secs => $4))";

/// Checks `tables` every second and analyzes those whose statistics went stale, until
/// `stop` is cancelled. A check that fails (the database away) waits for the next one. On
/// SQLite it returns at once: SQLite gathers no statistics unless asked, so its plans do not
/// depend on what a table held when they were made.
pub async fn keep_fresh(pool: Pool, tables: &'static [&'static str], stop: CancellationToken) {
    let Pool::Postgres(pool) = pool else {
        return;
    };
    // The tables were just migrated: the first look is one interval away.
    crate::periodic::every(CHECK_INTERVAL, stop, || async {
        if let Err(error) = analyze_stale(&pool, tables).await {
            tracing::debug!(%error, "cannot refresh planner statistics; trying again later");
        }
    })
    .await;
}

/// Analyzes those of `tables` whose statistics are stale; returns their names. A table that
/// is being vacuumed or analyzed already is skipped quietly (its lock is taken), and checked
/// again next time.
async fn analyze_stale(pool: &PgPool, tables: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let stale: Vec<String> = sqlx::query_scalar(STALE_TABLES)
        .bind(tables)
        .bind(CHANGED_ROWS)
        .bind(CHANGED_FRACTION)
        .bind(STEADY_SIZE_WAIT.as_secs_f64())
        .fetch_all(pool)
        .await?;
    for table in &stale {
        // Without the warning a skipped table sends, which the driver would log.
        let mut transaction = pool
            .begin_with("BEGIN; SET LOCAL client_min_messages = error")
            .await?;
        // The name is as PostgreSQL quotes it (`regclass`), of a table it just listed.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ANALYZE (SKIP_LOCKED) {table}"
        )))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        tracing::debug!(table, "planner statistics refreshed");
    }
    Ok(stale)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::{Backend, TestDatabase};

    const TABLES: &[&str] = &["grown"];

    /// Runs `statement` on `connection`.
    async fn run(connection: &mut sqlx::PgConnection, statement: &'static str) {
        sqlx::raw_sql(statement)
            .execute(connection)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }

    /// Returns the plan `connection` holds for its prepared lookup.
    async fn lookup_plan(connection: &mut sqlx::PgConnection) -> String {
        let lines: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE lookup('{1}')")
            .fetch_all(connection)
            .await
            .expect("the lookup is explained");
        lines.join("\n")
    }

    /// Waits until the statistics system counts `rows` changes to `grown`.
    async fn changes_counted(pool: &PgPool, rows: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counted: Option<i64> = sqlx::query_scalar(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables \
                 WHERE schemaname = current_schema() AND relname = 'grown'",
            )
            .fetch_optional(pool)
            .await
            .expect("statistics are readable");
            if counted.unwrap_or(0) >= rows {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "changes never counted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_table_that_grew_is_analyzed_once_and_the_plans_made_before_follow() {
        let database = TestDatabase::new(Backend::Postgres).await;
        let Pool::Postgres(pool) = database.pool() else {
            unreachable!("a postgres test database has a postgres pool");
        };
        // A small table (that autovacuum leaves alone, so only the check analyzes it), and a
        // connection holding a lookup planned while it is small, as a service's connections do.
        let mut connection = pool.acquire().await.expect("a connection");
        run(
            &mut connection,
            "CREATE TABLE grown (id BIGINT PRIMARY KEY, body TEXT NOT NULL) \
             WITH (autovacuum_enabled = false); \
             INSERT INTO grown SELECT n, 'row' FROM generate_series(1, 20) AS n; \
             ANALYZE grown; \
             SET plan_cache_mode = force_generic_plan; \
             PREPARE lookup (BIGINT[]) AS SELECT body FROM grown WHERE id = ANY($1)",
        )
        .await;
        assert!(lookup_plan(&mut connection).await.contains("Seq Scan"));
        let analyzed = analyze_stale(&pool, TABLES).await.expect("the check runs");
        assert!(analyzed.is_empty(), "an unchanged table is left alone");

        run(
            &mut connection,
            "INSERT INTO grown SELECT n, 'row' FROM generate_series(21, 20000) AS n; \
             SELECT pg_stat_force_next_flush()",
        )
        .await;
        assert!(
            lookup_plan(&mut connection).await.contains("Seq Scan"),
            "the plan made while the table was small outlives its growth"
        );
        changes_counted(&pool, 19_980).await;

        let analyzed = analyze_stale(&pool, TABLES).await.expect("the check runs");
        assert_eq!(
            analyzed,
            vec!["grown".to_owned()],
            "the name as SQL quotes it"
        );
        let analyzed = analyze_stale(&pool, TABLES).await.expect("the check runs");
        assert!(analyzed.is_empty(), "a table just analyzed is left alone");
        assert!(
            lookup_plan(&mut connection).await.contains("Index"),
            "the connection plans its lookup again with the new statistics"
        );

        // Every row changed in place: the size held, so the table waits for its minute.
        run(
            &mut connection,
            "UPDATE grown SET body = 'changed'; SELECT pg_stat_force_next_flush()",
        )
        .await;
        changes_counted(&pool, 20_000).await;
        let analyzed = analyze_stale(&pool, TABLES).await.expect("the check runs");
        assert!(analyzed.is_empty(), "a table of steady size waits a minute");
    }
}

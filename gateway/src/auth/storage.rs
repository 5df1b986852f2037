//! Key storage: the [`KeyStore`] trait and its SQLite and PostgreSQL backends, which share
//! every statement. The gateway owns its table and migrations (`_swarm_gateway_migrations`).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Postgres, Sqlite};
use swarm_kit::StoreError;
use swarm_kit::db::Pool;
use swarm_kit::page::Page;
use uuid::Uuid;

use super::identity::{ApiKey, Role};

/// A key to store: its metadata and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its id.
    pub id: Uuid,
    /// Who or what it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The agent an agent key acts for.
    pub agent_id: Option<Uuid>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// The secret's first characters.
    pub prefix: String,
}

/// Durable storage of API keys. Times are Unix milliseconds.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores `key`; `false` when a key with the same hash exists already (revoked or not).
    async fn insert(&self, key: &StoredKey, now: i64) -> Result<bool, StoreError>;

    /// Returns the key whose secret hashes to `hash`, unless revoked.
    async fn find_active(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Returns keys, oldest first, and how many there are.
    async fn list(&self, page: Page) -> Result<(Vec<ApiKey>, u64), StoreError>;

    /// Revokes a key; `None` when no key has that id.
    async fn revoke(&self, id: Uuid, now: i64) -> Result<Option<ApiKey>, StoreError>;

    /// Counts the admin keys not revoked.
    async fn count_active_admins(&self) -> Result<u64, StoreError>;
}

const COLUMNS: &str = "id, name, role, agent_id, prefix, created_at, revoked_at";

swarm_kit::from_row!(ApiKey {
    id,
    name,
    role text,
    agent_id,
    prefix,
    created_at,
    revoked_at,
});

/// Implements [`KeyStore`] for `$store`, whose `readers` and `writer` pools are of database
/// `$db`.
macro_rules! impl_key_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl KeyStore for $store {
            async fn insert(&self, key: &StoredKey, now: i64) -> Result<bool, StoreError> {
                let inserted = sqlx::query(
                    "INSERT INTO api_keys (id, name, role, agent_id, hash, prefix, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING",
                )
                .bind(key.id)
                .bind(&key.name)
                .bind(key.role.as_str())
                .bind(key.agent_id)
                .bind(&key.hash)
                .bind(&key.prefix)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn find_active(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
                let key = sqlx::query_as(const_format::concatcp!(
                    "SELECT ",
                    COLUMNS,
                    " FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"
                ))
                .bind(hash)
                .fetch_optional(&self.readers)
                .await?;
                Ok(key)
            }

            async fn list(&self, page: Page) -> Result<(Vec<ApiKey>, u64), StoreError> {
                let keys = sqlx::query_as(const_format::concatcp!(
                    "SELECT ",
                    COLUMNS,
                    " FROM api_keys ORDER BY created_at, id LIMIT $1 OFFSET $2"
                ))
                .bind(i64::from(page.per_page))
                .bind(page.offset())
                .fetch_all(&self.readers)
                .await?;
                let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
                    .fetch_one(&self.readers)
                    .await?;
                Ok((keys, u64::try_from(total).unwrap_or(0)))
            }

            async fn revoke(&self, id: Uuid, now: i64) -> Result<Option<ApiKey>, StoreError> {
                let key = sqlx::query_as(const_format::concatcp!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                     RETURNING ",
                    COLUMNS
                ))
                .bind(id)
                .bind(now)
                .fetch_optional(&self.writer)
                .await?;
                Ok(key)
            }

            async fn count_active_admins(&self) -> Result<u64, StoreError> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
                )
                .fetch_one(&self.readers)
                .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }
        }
    };
}

/// Keys stored in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteKeyStore {
    readers: sqlx::Pool<Sqlite>,
    writer: sqlx::Pool<Sqlite>,
}

/// Keys stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresKeyStore {
    readers: sqlx::Pool<Postgres>,
    writer: sqlx::Pool<Postgres>,
}

impl_key_store!(SqliteKeyStore, Sqlite);
impl_key_store!(PostgresKeyStore, Postgres);

/// Applies the gateway's migrations to `pool` and returns the key store over it.
pub async fn open(pool: Pool) -> Result<Arc<dyn KeyStore>, sqlx::migrate::MigrateError> {
    Ok(match pool {
        Pool::Sqlite(pools) => {
            swarm_kit::db::migrate(
                &Pool::Sqlite(pools.clone()),
                "gateway",
                sqlx::migrate!("migrations/sqlite"),
            )
            .await?;
            Arc::new(SqliteKeyStore {
                readers: pools.readers,
                writer: pools.writer,
            })
        }
        Pool::Postgres(pool) => {
            swarm_kit::db::migrate(
                &Pool::Postgres(pool.clone()),
                "gateway",
                sqlx::migrate!("migrations/postgres"),
            )
            .await?;
            Arc::new(PostgresKeyStore {
                readers: pool.clone(),
                writer: pool,
            })
        }
    })
}

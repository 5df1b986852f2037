//! Statements both backends share, and the macro that implements
//! [`AgentStore`](super::AgentStore) over them for one backend, given that backend's
//! capability filter.

/// Inserts an agent.
pub const INSERT: &str = "INSERT INTO agents (id, name, kind, capabilities, config, \
    max_concurrency, last_heartbeat_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) RETURNING *";

/// Finds an agent by id.
pub const BY_ID: &str = "SELECT * FROM agents WHERE id = $1";

/// Finds an agent by its unique name.
pub const BY_NAME: &str = "SELECT * FROM agents WHERE name = $1";

/// Applies the set fields of an update.
pub const UPDATE: &str = "UPDATE agents SET name = COALESCE($2, name), \
    kind = COALESCE($3, kind), capabilities = COALESCE($4, capabilities), \
    config = COALESCE($5, config), max_concurrency = COALESCE($6, max_concurrency), \
    updated_at = $7 WHERE id = $1 RETURNING *";

/// Deletes an agent.
pub const DELETE: &str = "DELETE FROM agents WHERE id = $1";

/// Records a heartbeat.
pub const HEARTBEAT: &str = "UPDATE agents SET last_heartbeat_at = $2 WHERE id = $1 RETURNING *";

/// Implements `AgentStore` for `$store` (a struct with `readers` and `writer` pools of `$db`), with
/// `$has_capability`, the backend's SQL that tests the bound capability, appended after it.
macro_rules! impl_agent_store {
    ($store:ty, $db:ty, $has_capability:expr) => {
        #[async_trait::async_trait]
        impl $crate::storage::AgentStore for $store {
            async fn insert(
                &self,
                agent: &$crate::domain::NewAgent,
                now: i64,
            ) -> Result<$crate::domain::Agent, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::INSERT)
                    .bind(uuid::Uuid::now_v7())
                    .bind(&agent.name)
                    .bind(&agent.kind)
                    .bind(sqlx::types::Json(&agent.capabilities))
                    .bind(&agent.config)
                    .bind(agent.max_concurrency)
                    .bind(now)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn get(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::domain::Agent>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn by_name(
                &self,
                name: &str,
            ) -> Result<Option<$crate::domain::Agent>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::BY_NAME)
                    .bind(name)
                    .fetch_optional(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn get_many(
                &self,
                ids: &[uuid::Uuid],
            ) -> Result<Vec<$crate::domain::Agent>, swarm_kit::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query =
                    sqlx::QueryBuilder::<$db>::new("SELECT * FROM agents WHERE id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                query.push(")");
                query
                    .build_query_as()
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn list(
                &self,
                capability: Option<&str>,
                heartbeat: Option<$crate::storage::HeartbeatFilter>,
                page: Option<swarm_kit::page::Page>,
            ) -> Result<(Vec<$crate::domain::Agent>, u64), swarm_kit::StoreError> {
                let filter = |query: &mut sqlx::QueryBuilder<$db>| {
                    query.push(" WHERE TRUE");
                    if let Some(capability) = capability {
                        query
                            .push(" AND ")
                            .push($has_capability)
                            .push_bind(capability.to_owned())
                            .push(")");
                    }
                    match heartbeat {
                        Some($crate::storage::HeartbeatFilter::Before(at)) => {
                            query.push(" AND last_heartbeat_at < ").push_bind(at);
                        }
                        Some($crate::storage::HeartbeatFilter::Since(at)) => {
                            query.push(" AND last_heartbeat_at >= ").push_bind(at);
                        }
                        None => {}
                    }
                };
                let mut select = sqlx::QueryBuilder::<$db>::new("SELECT * FROM agents");
                filter(&mut select);
                select.push(" ORDER BY created_at, id");
                if let Some(page) = page {
                    select
                        .push(" LIMIT ")
                        .push_bind(page.limit())
                        .push(" OFFSET ")
                        .push_bind(page.offset());
                }
                let agents: Vec<$crate::domain::Agent> =
                    select.build_query_as().fetch_all(&self.readers).await?;
                let total = if page.is_some() {
                    let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM agents");
                    filter(&mut count);
                    let total: i64 = count.build_query_scalar().fetch_one(&self.readers).await?;
                    total.unsigned_abs()
                } else {
                    agents.len() as u64
                };
                Ok((agents, total))
            }

            async fn update(
                &self,
                id: uuid::Uuid,
                update: &$crate::domain::AgentUpdate,
                now: i64,
            ) -> Result<Option<$crate::domain::Agent>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::UPDATE)
                    .bind(id)
                    .bind(&update.name)
                    .bind(&update.kind)
                    .bind(update.capabilities.as_ref().map(sqlx::types::Json))
                    .bind(&update.config)
                    .bind(update.max_concurrency)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn delete(&self, id: uuid::Uuid) -> Result<bool, swarm_kit::StoreError> {
                let done = sqlx::query($crate::storage::sql::DELETE)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn heartbeat(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> Result<Option<$crate::domain::Agent>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::HEARTBEAT)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }
        }
    };
}

pub(crate) use impl_agent_store;

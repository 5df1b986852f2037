//! Cache routes: store, read and delete JSON values by key, and read the cache's statistics.
//! Every key is the caller's tenant's: a client reaches only its own entries, admins a shared
//! namespace, and nobody the entries the services keep for themselves (the cache service stores
//! each key under the owner it is named with).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_proto::cache::v1 as pb;

use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Json;
use crate::model::raw_json;
use crate::state::AppState;

/// The time to live when a write names none.
const DEFAULT_TTL_SECONDS: u64 = 300;

/// Body of `PUT /api/cache/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutValue {
    #[schema(value_type = serde_json::Value)]
    value: Box<RawValue>,
    /// Seconds to keep it, 1 to 2,592,000 (30 days); default 300.
    #[schema(minimum = 1, maximum = 2_592_000)]
    ttl_seconds: Option<u64>,
}

/// A stored value, as `GET /api/cache/{key}` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheEntry {
    /// The key.
    key: String,
    /// The value, as stored.
    #[schema(value_type = serde_json::Value)]
    value: Box<RawValue>,
    /// Seconds until it expires, rounded up.
    ttl_seconds_remaining: u64,
}

/// The cache's statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheStats {
    /// Lookups that found their key.
    hits: u64,
    /// Lookups that did not.
    misses: u64,
    /// hits / (hits + misses).
    hit_rate: f64,
    /// Entries held by the tier that answers.
    entries: u64,
    /// Entries evicted by that tier.
    evictions: u64,
    /// `redis` or `memory`.
    backend: String,
    /// Whether Redis is configured but down, so memory answers.
    degraded: bool,
}

/// Stores a JSON value: 204.
#[utoipa::path(put, operation_id = "putCacheValue", path = "/api/cache/{key}", tag = "cache", params(("key" = String, Path, description = "The key, 1 to 512 bytes.")), request_body = PutValue,
    responses((status = 204, description = "Stored.")))]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Json(body): Json<PutValue>,
) -> Result<StatusCode, ApiError> {
    let ttl_seconds = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl_seconds == 0 {
        return Err(ApiError::invalid("ttl_seconds must be at least 1"));
    }
    let value =
        swarm_kit::validate::json_text("value", body.value.get().to_owned(), usize::MAX, "null")
            .map_err(|invalid| ApiError::invalid(invalid.to_string()))?;
    let request = pb::SetRequest {
        key,
        value: value.into_bytes(),
        ttl_seconds,
        namespace: pb::Namespace::tenant(caller.tenant()),
    };
    state.cache().set(state.ask(request)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a value: `{"key", "value", "ttl_seconds_remaining"}`, or 404.
#[utoipa::path(get, operation_id = "getCacheValue", path = "/api/cache/{key}", tag = "cache", params(("key" = String, Path, description = "The key, 1 to 512 bytes.")),
    responses((status = 200, description = "The value and its remaining time to live.", body = CacheEntry)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<axum::Json<CacheEntry>, ApiError> {
    let entry = state
        .cache()
        .get(state.ask(pb::GetRequest {
            key,
            namespace: pb::Namespace::tenant(caller.tenant()),
        }))
        .await?
        .into_inner();
    if !entry.found {
        return Err(ApiError::new(
            swarm_kit::ErrorCode::NotFound,
            format!("no cache entry {:?}", entry.key),
        ));
    }
    Ok(axum::Json(CacheEntry {
        value: raw_json(String::from_utf8_lossy(&entry.value).into_owned()),
        key: entry.key,
        ttl_seconds_remaining: entry.ttl_seconds_remaining,
    }))
}

/// Deletes a value: 204 whether or not it was there.
#[utoipa::path(delete, operation_id = "deleteCacheValue", path = "/api/cache/{key}", tag = "cache", params(("key" = String, Path, description = "The key, 1 to 512 bytes.")),
    responses((status = 204, description = "Deleted, or was not there.")))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .cache()
        .delete(state.ask(pb::DeleteRequest {
            key,
            namespace: pb::Namespace::tenant(caller.tenant()),
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the cache's statistics, which count every tenant's reads (admin keys only).
#[utoipa::path(get, operation_id = "getCacheStats", path = "/api/cache/stats", tag = "cache",
    responses((status = 200, description = "The cache's statistics.", body = CacheStats)))]
pub async fn stats(State(state): State<AppState>) -> Result<axum::Json<CacheStats>, ApiError> {
    let stats = state
        .cache()
        .stats(state.ask(pb::StatsRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(CacheStats {
        hits: stats.hits,
        misses: stats.misses,
        hit_rate: stats.hit_rate,
        entries: stats.entries,
        evictions: stats.evictions,
        backend: stats.backend,
        degraded: stats.degraded,
    }))
}

//! Cache routes: store, read and delete JSON values by key, and read the cache's statistics.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use swarm_proto::cache::v1 as pb;

use crate::error::ApiError;
use crate::extract::Json;
use crate::model::raw_json;
use crate::state::AppState;

/// The time to live when a write names none.
const DEFAULT_TTL_SECONDS: u64 = 300;

/// Body of `PUT /api/cache/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutValue {
    value: Box<RawValue>,
    ttl_seconds: Option<u64>,
}

/// Stores a JSON value: 204.
pub async fn put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Json(body): Json<PutValue>,
) -> Result<StatusCode, ApiError> {
    let ttl_seconds = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl_seconds == 0 {
        return Err(ApiError::invalid("ttl_seconds must be at least 1"));
    }
    let request = pb::SetRequest {
        key,
        value: body.value.get().as_bytes().to_vec(),
        ttl_seconds,
    };
    state
        .cache
        .clone()
        .set(state.call(request, Duration::ZERO))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a value: `{"key", "value", "ttl_seconds_remaining"}`, or 404.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let entry = state
        .cache
        .clone()
        .get(state.call(pb::GetRequest { key }, Duration::ZERO))
        .await?
        .into_inner();
    if !entry.found {
        return Err(ApiError::new(
            swarm_kit::ErrorCode::NotFound,
            format!("no cache entry {:?}", entry.key),
        ));
    }
    let value = raw_json(String::from_utf8_lossy(&entry.value).into_owned());
    Ok(axum::Json(json!({
        "key": entry.key,
        "value": value,
        "ttl_seconds_remaining": entry.ttl_seconds_remaining,
    })))
}

/// Deletes a value: 204 whether or not it was there.
pub async fn delete(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .cache
        .clone()
        .delete(state.call(pb::DeleteRequest { key }, Duration::ZERO))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the cache's statistics.
pub async fn stats(
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let stats = state
        .cache
        .clone()
        .stats(state.call(pb::StatsRequest {}, Duration::ZERO))
        .await?
        .into_inner();
    Ok(axum::Json(json!({
        "hits": stats.hits,
        "misses": stats.misses,
        "hit_rate": stats.hit_rate,
        "entries": stats.entries,
        "evictions": stats.evictions,
        "backend": stats.backend,
        "degraded": stats.degraded,
    })))
}

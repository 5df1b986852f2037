//! Sparse fieldsets: `?fields=id,status` on any GET keeps only those top-level fields of the
//! answer's object, or of each object in a page's `items`. Asking for a field the answer's
//! objects do not have is a 400.

use std::collections::HashSet;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The largest answer that is projected.
const MAX_PROJECTED_BYTES: usize = 16 * 1024 * 1024;

/// Projects successful JSON GET answers onto the fields named by `?fields=`.
pub async fn project(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let wanted = match requested_fields(request.uri().query()) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => return next.run(request).await,
        Err(error) => return error.into_response(),
    };
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::OK || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_PROJECTED_BYTES).await else {
        return ApiError::new(
            swarm_kit::ErrorCode::Internal,
            "answer too large to project",
        )
        .into_response();
    };
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let projected = match answer.get_mut("items").and_then(Value::as_array_mut) {
        Some(items) => items
            .iter_mut()
            .try_for_each(|item| project_object(item, &wanted)),
        None => project_object(&mut answer, &wanted),
    };
    if let Err(error) = projected {
        return error.into_response();
    }
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Reads `fields` from a query string: `None` when absent; an empty list is refused.
fn requested_fields(query: Option<&str>) -> Result<Option<HashSet<String>>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let Some((_, list)) = url_pairs(query).find(|(name, _)| name == "fields") else {
        return Ok(None);
    };
    let wanted: HashSet<String> = list
        .split(',')
        .map(str::trim)
        .filter(|field| !field.is_empty())
        .map(str::to_owned)
        .collect();
    if wanted.is_empty() {
        return Err(ApiError::invalid("fields must name at least one field"));
    }
    Ok(Some(wanted))
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

/// Keeps only `wanted` keys of an object; a wanted key it lacks is an unknown field.
fn project_object(value: &mut Value, wanted: &HashSet<String>) -> Result<(), ApiError> {
    let Some(object) = value.as_object_mut() else {
        return Ok(());
    };
    if let Some(unknown) = wanted
        .iter()
        .find(|field| !object.contains_key(field.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "unknown field {unknown:?} in fields"
        )));
    }
    let kept: Map<String, Value> = std::mem::take(object)
        .into_iter()
        .filter(|(key, _)| wanted.contains(key))
        .collect();
    *object = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(list: &[&str]) -> HashSet<String> {
        list.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn objects_keep_only_the_wanted_fields() {
        let mut task = json!({"id": "1", "status": "queued", "title": "t"});
        project_object(&mut task, &fields(&["id", "status"])).unwrap();
        assert_eq!(task, json!({"id": "1", "status": "queued"}));
        assert!(project_object(&mut task, &fields(&["nope"])).is_err());
    }

    #[test]
    fn the_fields_parameter_is_read_from_the_query() {
        assert_eq!(requested_fields(Some("page=2")).unwrap(), None);
        assert_eq!(
            requested_fields(Some("fields=id,%20status")).unwrap(),
            Some(fields(&["id", "status"]))
        );
        assert!(requested_fields(Some("fields=")).is_err());
    }
}

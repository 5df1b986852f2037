//! HTTP validators: every successful GET answer carries a strong `ETag` (a hash of the exact
//! bytes sent, so each content encoding has its own), and a request whose `If-None-Match`
//! matches gets `304 Not Modified` with no body. Event streams pass through untouched.

use std::hash::{Hash, Hasher};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use swarm_kit::ErrorCode;

use crate::error::ApiError;

/// The largest answer the middleware buffers to hash; larger ones pass without an `ETag`.
const MAX_HASHED_BYTES: usize = 16 * 1024 * 1024;

/// Adds `ETag` to successful GET answers and turns matching `If-None-Match` into 304.
pub async fn etag(request: Request, next: Next) -> Response {
    let is_get = request.method() == Method::GET;
    let if_none_match = request.headers().get(IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if !is_get || response.status() != StatusCode::OK || is_stream {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_HASHED_BYTES).await else {
        return ApiError::new(ErrorCode::Internal, "the answer is too large to send")
            .into_response();
    };
    let tag = strong_tag(&bytes);
    if if_none_match.is_some_and(|header| matches(&header, &tag)) {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified.headers_mut().insert(ETAG, tag);
        for name in ["x-request-id", "vary", "cache-control"] {
            if let Some(value) = parts.headers.get(name) {
                not_modified.headers_mut().insert(name, value.clone());
            }
        }
        return not_modified;
    }
    parts.headers.insert(ETAG, tag);
    Response::from_parts(parts, Body::from(bytes))
}

/// Hashes the exact bytes of an answer into a quoted strong entity tag.
fn strong_tag(bytes: &[u8]) -> HeaderValue {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let tag = format!("\"{:016x}{:08x}\"", hasher.finish(), bytes.len());
    HeaderValue::from_str(&tag).expect("hex digits make a valid header")
}

/// Tells whether an `If-None-Match` header matches `tag` (weak comparison, as RFC 9110 asks
/// for this header: `W/` prefixes are ignored; `*` matches anything).
fn matches(header: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(header) = header.to_str() else {
        return false;
    };
    let tag = tag.to_str().unwrap_or_default();
    header
        .split(',')
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == "*" || candidate == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_bytes() {
        assert_eq!(strong_tag(b"{}"), strong_tag(b"{}"));
        assert_ne!(strong_tag(b"{\"a\":1}"), strong_tag(b"{\"a\":2}"));
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = strong_tag(b"x");
        let quoted = tag.to_str().unwrap().to_owned();
        for header in [
            quoted.clone(),
            format!("W/{quoted}"),
            format!("\"other\", {quoted}"),
            "*".to_owned(),
        ] {
            assert!(
                matches(&HeaderValue::from_str(&header).unwrap(), &tag),
                "{header}"
            );
        }
        assert!(!matches(&HeaderValue::from_static("\"other\""), &tag));
    }
}

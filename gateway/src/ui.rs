//! The dashboard: the single-page app built from `ui/` (`make ui`), embedded in the binary
//! (read from `ui/dist` at run time in debug builds) and served at `/ui/`, open like the API
//! documentation: the page holds nothing, and every call it makes carries the signed-in key.
//!
//! `/ui/settings.json` tells the page whether the gateway checks keys, so it asks for one only
//! when it must. Hashed assets (`/ui/assets/*`) are cached for a year; the page itself is revalidated by its
//! `ETag`, so a new build shows at the next load. A binary built without the dashboard answers
//! `/ui/` with a 503 that says how to build it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use swarm_kit::error::ErrorCode;

use crate::error::ApiError;

/// The built dashboard.
#[derive(rust_embed::RustEmbed)]
#[folder = "../ui/dist"]
#[allow_missing = true]
struct Assets;

/// What the page may load and reach: only the gateway itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

/// The dashboard's routes; `auth` tells the page whether to ask for a key.
pub fn router<S: Clone + Send + Sync + 'static>(auth: bool) -> Router<S> {
    Router::new()
        .route(
            "/ui/settings.json",
            get(move || async move { axum::Json(serde_json::json!({ "auth": auth })) }),
        )
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { asset("index.html", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { asset(&path, &headers) }),
        )
}

/// Answers one embedded file, or 304 when the client has it already.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return if Assets::get("index.html").is_none() {
            ApiError::new(
                ErrorCode::Unavailable,
                "the dashboard is not built into this binary: run `make ui`, then build again",
            )
            .into_response()
        } else {
            ApiError::new(ErrorCode::NotFound, "no such dashboard file").into_response()
        };
    };
    let etag = format!(
        "\"{}\"",
        swarm_kit::digest::hex(&file.metadata.sha256_hash()[..16])
    );
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut answer_headers = HeaderMap::new();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            answer_headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache);
    set(header::CONTENT_TYPE, file.metadata.mimetype());
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if path == "index.html" {
        set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    }
    let seen = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if seen {
        return (StatusCode::NOT_MODIFIED, answer_headers).into_response();
    }
    (answer_headers, file.data).into_response()
}

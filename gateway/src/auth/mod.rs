//! Who may call what. Every `/api/*` route but health asks for `Authorization: Bearer <key>`;
//! the key's [`Role`] decides the routes it may call (admin: all; client: submitting and
//! reading tasks and messages, and the cache; agent: claiming and reporting, and its own agent),
//! and each key has its own rate limit. Handlers then hold callers to their own data: a client
//! sees only the tasks it submitted (another's are 404), an agent key acts only for its agent.
//! `SWARM_AUTH=off` lets every caller act as admin.

pub mod identity;
pub mod keys;
pub mod limit;
pub mod storage;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use swarm_kit::ErrorCode;

pub use identity::{ApiKey, Caller, Role};
pub use keys::{KeyRegistry, NewKey};
pub use limit::{Rate, RateLimiter};

use crate::error::ApiError;
use crate::rules::{Access, RouteRules};

/// How the gateway checks callers.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Option<KeyRegistry>,
    enforce: bool,
    limiter: RateLimiter,
}

impl Authenticator {
    /// Checks keys against `keys` and limits each to `rate`.
    pub fn enforcing(keys: KeyRegistry, rate: Rate) -> Self {
        Self {
            keys: Some(keys),
            enforce: true,
            limiter: RateLimiter::new(rate),
        }
    }

    /// Lets every caller act as admin; `keys`, when given, can still be managed.
    pub fn off(keys: Option<KeyRegistry>) -> Self {
        Self {
            keys,
            enforce: false,
            limiter: RateLimiter::new(Rate {
                per_second: 0.0,
                burst: 0,
            }),
        }
    }

    /// Returns the key registry, when the gateway has one.
    pub fn keys(&self) -> Option<&KeyRegistry> {
        self.keys.as_ref()
    }

    /// Identifies the holder of the key that `headers` carry (anyone is an admin while checking
    /// is off). A key that cannot be one of ours is refused without asking the key store.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let (Some(keys), true) = (&self.keys, self.enforce) else {
            return Ok(Caller::anonymous_admin());
        };
        let Some(secret) = bearer(headers) else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "an api key is required: send Authorization: Bearer <key>",
            ));
        };
        let unknown = || {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the api key is unknown or revoked",
            )
        };
        if !keys::is_well_formed(secret) {
            return Err(unknown());
        }
        match keys.check(secret).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(unknown()),
            Err(error) => {
                // Busy is what a flood of made-up keys causes: not worth a warning each.
                if matches!(error, keys::KeyError::Busy) {
                    tracing::debug!(%error, "cannot check an api key");
                } else {
                    tracing::warn!(%error, "cannot check an api key");
                }
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "cannot check the api key now",
                ))
            }
        }
    }

    /// Takes one request from `caller`'s rate; past it, says how long to wait.
    pub fn limit(&self, caller: &Caller) -> Result<(), RateLimited> {
        self.limiter
            .take(caller.key_id)
            .map_err(|wait| RateLimited {
                retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
    }
}

/// A request past its key's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Whole seconds to wait before the next request, at least 1.
    pub retry_after_seconds: u64,
}

impl RateLimited {
    /// Returns the error that answers the request.
    pub fn error(self) -> ApiError {
        ApiError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "rate limit reached; retry in {} s",
                self.retry_after_seconds
            ),
        )
    }
}

/// Identifies the caller of every route that takes keys, checks the route admits its role and
/// that its rate allows it, and hands the [`Caller`] to the handler. Open routes pass, and so do
/// requests that match no declared route and method: the router answers those 404 or 405
/// without running a handler.
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(rules) = request.extensions().get::<RouteRules>().copied() else {
        return next.run(request).await;
    };
    if rules.access == Access::Open {
        return next.run(request).await;
    }
    let caller = match auth.identify(request.headers()).await {
        Ok(caller) => caller,
        Err(error) => {
            let challenge = error.0.code == ErrorCode::Unauthenticated;
            let mut response = error.into_response();
            if challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
    };
    if !rules.access.admits(caller.role) {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        return ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "a {} key may not call {} {route}",
                caller.role.as_str(),
                request.method()
            ),
        )
        .into_response();
    }
    if let Err(limited) = auth.limit(&caller) {
        let mut response = limited.error().into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(limited.retry_after_seconds),
        );
        return response;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Reads the key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

impl Caller {
    /// Refuses an agent key that names another agent than its own.
    pub fn check_agent(&self, agent_id: &str) -> Result<(), ApiError> {
        match (self.role, self.agent_id) {
            (Role::Agent, Some(own)) if own.to_string() != agent_id.trim().to_ascii_lowercase() => {
                Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!("this key acts for agent {own} only"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Returns the user a client's tasks are recorded under; `None` for other roles.
    pub fn client_user(&self) -> Option<&str> {
        (self.role == Role::Client).then_some(self.name.as_str())
    }

    /// Returns the tenant the caller's idempotency keys and cache entries belong to: a
    /// client's own user, or the empty name of the scope admin callers share.
    pub fn tenant(&self) -> &str {
        self.client_user().unwrap_or_default()
    }

    /// Tells whether the caller must be shown a task before reaching it (clients reach only
    /// their own tasks, agents only those they hold).
    pub fn is_confined(&self) -> bool {
        self.role != Role::Admin
    }

    /// Refuses a client a workflow or schedule (`what`, named `id`) that `owner` submitted,
    /// as if it did not exist, unless the client is that owner (agents reach neither; the
    /// route table keeps them out).
    pub fn check_owner(&self, owner: Option<&str>, what: &str, id: &str) -> Result<(), ApiError> {
        match self.client_user() {
            Some(own) if owner != Some(own) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("{what} {id} not found"),
            )),
            _ => Ok(()),
        }
    }

    /// Tells whether a watch of a task the caller reached may show it this change: an agent
    /// follows a task only while it is the task's agent, never once the task went back to the
    /// queue (unless pinned to it) or to another agent; others follow what they reached.
    pub fn may_follow(&self, task: &swarm_proto::tasks::v1::Task) -> bool {
        self.role != Role::Agent || self.is_agent_of(task)
    }

    /// Tells whether the caller's agent is the task's agent.
    fn is_agent_of(&self, task: &swarm_proto::tasks::v1::Task) -> bool {
        task.agent_id.as_deref() == self.agent_id.map(|id| id.to_string()).as_deref()
    }

    /// Refuses a caller a task it may not reach, as if the task did not exist: a client
    /// another user's task, an agent a task it does not hold.
    pub fn check_reach(&self, task: &swarm_proto::tasks::v1::Task) -> Result<(), ApiError> {
        use swarm_proto::tasks::v1::TaskStatus;
        let reaches = match self.role {
            Role::Admin => true,
            Role::Client => task.user_id.as_deref() == self.client_user(),
            Role::Agent => task.status() == TaskStatus::Active && self.is_agent_of(task),
        };
        if reaches {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NotFound,
                format!("task {} not found", task.id),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer swarm_abc"),
        );
        assert_eq!(bearer(&headers), Some("swarm_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer   "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn agents_act_for_themselves_and_clients_see_their_own() {
        let agent = uuid::Uuid::now_v7();
        let caller = Caller {
            key_id: uuid::Uuid::now_v7(),
            name: "worker".into(),
            role: Role::Agent,
            agent_id: Some(agent),
        };
        assert!(caller.check_agent(&agent.to_string()).is_ok());
        assert!(
            caller
                .check_agent(&uuid::Uuid::now_v7().to_string())
                .is_err()
        );
        let task =
            |user: Option<&str>, holder: Option<uuid::Uuid>, status| swarm_proto::tasks::v1::Task {
                id: "t".into(),
                user_id: user.map(str::to_owned),
                agent_id: holder.map(|id| id.to_string()),
                status,
                ..Default::default()
            };
        let active = swarm_proto::tasks::v1::TaskStatus::Active as i32;
        let done = swarm_proto::tasks::v1::TaskStatus::Completed as i32;
        assert!(caller.check_reach(&task(None, Some(agent), active)).is_ok());
        assert!(caller.check_reach(&task(None, Some(agent), done)).is_err());
        let other = uuid::Uuid::now_v7();
        assert!(
            caller
                .check_reach(&task(None, Some(other), active))
                .is_err()
        );
        // A watch follows the agent's own attempt to its end, and no further.
        let queued = swarm_proto::tasks::v1::TaskStatus::Queued as i32;
        assert!(caller.may_follow(&task(None, Some(agent), done)));
        assert!(!caller.may_follow(&task(None, None, queued)));
        assert!(!caller.may_follow(&task(None, Some(other), active)));
        let client = Caller {
            role: Role::Client,
            agent_id: None,
            name: "ada".into(),
            ..caller
        };
        assert_eq!(client.tenant(), "ada");
        assert!(client.check_reach(&task(Some("ada"), None, active)).is_ok());
        assert_eq!(
            client
                .check_reach(&task(Some("bob"), None, active))
                .unwrap_err()
                .0
                .code,
            ErrorCode::NotFound
        );
        assert!(client.may_follow(&task(Some("ada"), Some(other), active)));
        let admin = Caller::anonymous_admin();
        assert_eq!(admin.tenant(), "");
        assert!(admin.check_reach(&task(None, None, active)).is_ok());
    }
}

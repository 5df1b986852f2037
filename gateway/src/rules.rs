//! What applies to each REST route, declared beside its handler in the route table
//! ([`crate::routes`]): who may call it, whether it is traced and measured, and whether its
//! deadline stretches for a long poll. The router attaches a route's rules to each of its
//! requests, so the middleware reads them instead of matching paths of its own.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::identity::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key.
    Open,
    /// Keys of these roles, and admin keys (which may call every route).
    Keys(&'static [Role]),
}

impl Access {
    /// Tells whether a key of `role` may call the route.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Self::Open => true,
            Self::Keys(roles) => role == Role::Admin || roles.contains(&role),
        }
    }
}

/// The rules of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRules {
    /// Who may call it.
    pub access: Access,
    /// Neither traced nor measured (health checks, which probes call all the time).
    pub quiet: bool,
    /// A long poll: its deadline stretches by the longest wait a caller may ask for.
    pub long_poll: bool,
}

impl RouteRules {
    /// The rules of a route with `access`, traced and measured, under the usual deadline.
    pub fn new(access: Access) -> Self {
        Self {
            access,
            quiet: false,
            long_poll: false,
        }
    }
}

/// The rules of every route, by method and route template.
#[derive(Debug, Default)]
pub struct RuleBook {
    routes: HashMap<(Method, String), RouteRules>,
}

impl RuleBook {
    /// Records the rules of `method` on `path`.
    pub fn insert(&mut self, method: Method, path: &str, rules: RouteRules) {
        self.routes.insert((method, path.to_owned()), rules);
    }

    /// Returns the rules of `method` on route template `path`, if it is a declared route. A
    /// `HEAD` follows the rules of `GET`: the router answers it with the `GET` handler (and
    /// drops the body), so it must pass the same checks.
    pub fn get(&self, method: &Method, path: &str) -> Option<RouteRules> {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        self.routes.get(&(method, path.to_owned())).copied()
    }

    /// Every declared route: method, route template and rules.
    pub fn iter(&self) -> impl Iterator<Item = (&Method, &str, RouteRules)> {
        self.routes
            .iter()
            .map(|((method, path), rules)| (method, path.as_str(), *rules))
    }
}

/// Hands the rules of the route a request matched to the middleware and handlers after it
/// (as a request extension); requests that match no declared route carry none.
pub async fn attach(
    State(book): State<Arc<RuleBook>>,
    mut request: Request,
    next: Next,
) -> Response {
    let rules = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| book.get(request.method(), path.as_str()));
    if let Some(rules) = rules {
        request.extensions_mut().insert(rules);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_reach_every_keyed_route_and_others_only_theirs() {
        let clients = Access::Keys(&[Role::Client]);
        assert!(clients.admits(Role::Admin) && clients.admits(Role::Client));
        assert!(!clients.admits(Role::Agent));
        let admins_only = Access::Keys(&[]);
        assert!(admins_only.admits(Role::Admin) && !admins_only.admits(Role::Client));
        assert!(Access::Open.admits(Role::Agent));
    }
}

//! Maps a request's host and path to the route that serves it.
//!
//! Invariant: routing is pure (no IO, no locks) and the most specific route
//! wins: a route for the request's host beats a host-less one, an exact path
//! beats a prefix, and a longer prefix beats a shorter one.

use std::collections::HashMap;

use crate::config::{HandlerName, RouteConfig, RoutePath};

/// A configured route, as the request path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Stable, bounded id for logs and metrics: `route[N]`, N its position in the config.
    pub id: std::sync::Arc<str>,
    /// The handler serving this route.
    pub handler: HandlerName,
}

/// Host → path table.
#[derive(Debug, Default)]
pub struct Router {
    by_host: HashMap<String, matchit::Router<usize>>,
    any_host: matchit::Router<usize>,
    routes: Vec<Route>,
}

/// A route the router could not take; config validation rules out the
/// duplicates that would cause it, so this signals a bug or an odd pattern.
#[derive(Debug, thiserror::Error)]
#[error("route[{index}] `{pattern}` cannot be added: {reason}")]
pub struct RouteConflict {
    index: usize,
    pattern: String,
    reason: matchit::InsertError,
}

impl Router {
    /// Builds the table from validated routes.
    pub fn build(configs: &[RouteConfig]) -> Result<Self, RouteConflict> {
        let mut router = Self::default();
        // Exact paths first: a prefix `/a/*` also claims the bare `/a`, and an
        // exact `/a` must keep it.
        let mut ordered: Vec<&RouteConfig> = configs.iter().collect();
        ordered.sort_by_key(|route| matches!(route.path, RoutePath::Prefix(_)));
        for config in ordered {
            let slot = router.routes.len();
            router.routes.push(Route {
                id: format!("route[{}]", config.index).into(),
                handler: config.handler.clone(),
            });
            let table = match &config.host {
                Some(host) => router.by_host.entry(host.clone()).or_default(),
                None => &mut router.any_host,
            };
            let conflict = |reason| RouteConflict {
                index: config.index,
                pattern: config.path.to_string(),
                reason,
            };
            match &config.path {
                RoutePath::Exact(path) => table.insert(escape(path), slot).map_err(conflict)?,
                RoutePath::Prefix(prefix) => {
                    table
                        .insert(format!("{}/{{*rest}}", escape(prefix)), slot)
                        .map_err(conflict)?;
                    // matchit's catch-all needs at least one character, so the
                    // prefix itself (`/a`, `/a/`) is claimed explicitly, unless an
                    // exact route already holds it.
                    let bare = [escape(prefix), format!("{}/", escape(prefix))];
                    for path in bare.into_iter().filter(|path| !path.is_empty()) {
                        match table.insert(path, slot) {
                            Ok(()) | Err(matchit::InsertError::Conflict { .. }) => {}
                            Err(other) => return Err(conflict(other)),
                        }
                    }
                }
            }
        }
        Ok(router)
    }

    /// The route for `path` on `host` (lowercase, without port), if any.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let on_host = host
            .and_then(|host| self.by_host.get(host))
            .and_then(|table| table.at(path).ok());
        let found = on_host.or_else(|| self.any_host.at(path).ok())?;
        self.routes.get(*found.value)
    }
}

/// matchit gives `{` and `}` a meaning; config paths are literal.
fn escape(path: &str) -> String {
    path.replace('{', "{{").replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(index: usize, host: Option<&str>, path: RoutePath, handler: &str) -> RouteConfig {
        RouteConfig {
            index,
            host: host.map(str::to_string),
            path,
            handler: HandlerName::parse(handler).expect("valid test handler name"),
        }
    }

    fn exact(path: &str) -> RoutePath {
        RoutePath::Exact(path.into())
    }

    fn prefix(path: &str) -> RoutePath {
        RoutePath::Prefix(path.into())
    }

    fn handler_for<'a>(router: &'a Router, host: Option<&str>, path: &str) -> Option<&'a str> {
        router.route(host, path).map(|route| route.handler.as_str())
    }

    #[test]
    fn exact_beats_prefix_and_longer_prefix_beats_shorter() {
        let router = Router::build(&[
            route(0, None, prefix(""), "root"),
            route(1, None, prefix("/api"), "api"),
            route(2, None, exact("/api"), "api-exact"),
            route(3, None, prefix("/api/v2"), "v2"),
        ])
        .expect("no conflicts");
        assert_eq!(handler_for(&router, None, "/"), Some("root"));
        assert_eq!(handler_for(&router, None, "/other/x"), Some("root"));
        assert_eq!(handler_for(&router, None, "/api"), Some("api-exact"));
        assert_eq!(handler_for(&router, None, "/api/"), Some("api"));
        assert_eq!(handler_for(&router, None, "/api/users/7"), Some("api"));
        assert_eq!(handler_for(&router, None, "/api/v2"), Some("v2"));
        assert_eq!(handler_for(&router, None, "/api/v2/x"), Some("v2"));
        assert_eq!(handler_for(&router, None, "/apix"), Some("root"));
    }

    #[test]
    fn exact_path_matches_only_itself() {
        let router = Router::build(&[route(0, None, exact("/hello"), "hello")]).expect("ok");
        assert_eq!(handler_for(&router, None, "/hello"), Some("hello"));
        assert_eq!(handler_for(&router, None, "/hello/"), None);
        assert_eq!(handler_for(&router, None, "/hello/x"), None);
        assert_eq!(handler_for(&router, None, "/"), None);
    }

    #[test]
    fn host_routes_win_and_fall_back_to_any_host() {
        let router = Router::build(&[
            route(0, None, prefix(""), "default"),
            route(1, Some("example.com"), exact("/"), "site"),
        ])
        .expect("no conflicts");
        assert_eq!(handler_for(&router, Some("example.com"), "/"), Some("site"));
        assert_eq!(
            handler_for(&router, Some("example.com"), "/x"),
            Some("default")
        );
        assert_eq!(
            handler_for(&router, Some("other.org"), "/"),
            Some("default")
        );
        assert_eq!(handler_for(&router, None, "/"), Some("default"));
    }

    #[test]
    fn braces_in_paths_are_literal() {
        let router = Router::build(&[route(0, None, exact("/a/{id}"), "lit")]).expect("ok");
        assert_eq!(handler_for(&router, None, "/a/{id}"), Some("lit"));
        assert_eq!(handler_for(&router, None, "/a/7"), None);
    }

    #[test]
    fn route_ids_name_the_config_position() {
        let router = Router::build(&[
            route(0, None, exact("/a"), "a"),
            route(5, None, prefix("/b"), "b"),
        ])
        .expect("ok");
        assert_eq!(router.route(None, "/b/c").map(|r| &*r.id), Some("route[5]"));
    }
}

//! Maps a request's host and path to the route that serves it.
//!
//! Invariant: routing is pure (no IO, no locks) and the most specific route
//! wins: a route for the request's host beats a wildcard one (`*.example.com`,
//! one label), which beats a host-less one, an exact path
//! beats a prefix, and a longer prefix beats a shorter one. Configured routes
//! always win over automatic ones (`/<name>/*` for unconfigured components).

use std::collections::HashMap;

use crate::config::{HandlerName, RouteAction, RouteConfig, RoutePath};

/// A configured route, as the request path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Stable, bounded id for logs and metrics: `route[N]`, N its position in the config.
    pub id: std::sync::Arc<str>,
    /// The handler serving this route.
    pub handler: HandlerName,
    /// Middleware the request passes through first, in order (the
    /// snapshot holds their chain, by `id`).
    pub middleware: Vec<HandlerName>,
    /// What the route does (serve, publish, invoke).
    pub action: RouteAction,
    /// The configured path, whose `{name}` segments an invocation route
    /// takes its arguments from.
    pub pattern: std::sync::Arc<str>,
    /// Its CORS and header layers, if it has any.
    pub edge: Option<crate::http::layers::RouteLayers>,
}

/// Host → path table.
#[derive(Debug, Default)]
pub struct Router {
    by_host: HashMap<String, matchit::Router<usize>>,
    any_host: matchit::Router<usize>,
    automatic: matchit::Router<usize>,
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
    /// Builds the table from validated routes, plus `/<name>/*` for each
    /// handler in `automatic`.
    pub fn build(
        configs: &[RouteConfig],
        automatic: &[HandlerName],
    ) -> Result<Self, RouteConflict> {
        let mut router = Self::default();
        // Exact paths first: a prefix `/a/*` also claims the bare `/a`, and an
        // exact `/a` must keep it.
        let mut ordered: Vec<&RouteConfig> = configs.iter().collect();
        ordered.sort_by_key(|route| matches!(route.path, RoutePath::Prefix(_)));
        for config in ordered {
            let slot = router.routes.len();
            router.routes.push(Route {
                id: config.id().into(),
                handler: config.handler.clone(),
                middleware: config.middleware.clone(),
                action: config.action.clone(),
                pattern: config.path.to_string().into(),
                edge: crate::http::layers::RouteLayers::build(&config.edge),
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
                // An invocation route's `{name}` segments are parameters.
                RoutePath::Exact(path) if matches!(config.action, RouteAction::Invoke { .. }) => {
                    table.insert(path.clone(), slot).map_err(conflict)?
                }
                RoutePath::Exact(path) => table.insert(escape(path), slot).map_err(conflict)?,
                RoutePath::Prefix(prefix) => {
                    insert_prefix(table, &escape(prefix), slot).map_err(conflict)?
                }
            }
        }
        for (index, name) in automatic.iter().enumerate() {
            let slot = router.routes.len();
            router.routes.push(Route {
                id: format!("auto:{name}").into(),
                handler: name.clone(),
                middleware: Vec::new(),
                action: RouteAction::Handler,
                pattern: format!("/{name}/*").into(),
                edge: None,
            });
            insert_prefix(&mut router.automatic, &format!("/{name}"), slot).map_err(|reason| {
                RouteConflict {
                    index,
                    pattern: format!("/{name}/*"),
                    reason,
                }
            })?;
        }
        Ok(router)
    }

    /// The route for `path` on `host` (lowercase, without port), if any.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let on_host = host
            .and_then(|host| self.by_host.get(host))
            .and_then(|table| table.at(path).ok());
        let on_wildcard = || {
            let (_, parent) = host?.split_once('.')?;
            self.by_host.get(&format!("*.{parent}"))?.at(path).ok()
        };
        let found = on_host
            .or_else(on_wildcard)
            .or_else(|| self.any_host.at(path).ok())
            .or_else(|| self.automatic.at(path).ok())?;
        self.routes.get(*found.value)
    }
}

/// Routes `prefix/*`: the catch-all, plus the prefix itself (`/a`, `/a/`),
/// which matchit's catch-all (at least one character) misses, unless an exact
/// route already holds it.
fn insert_prefix(
    table: &mut matchit::Router<usize>,
    prefix: &str,
    slot: usize,
) -> Result<(), matchit::InsertError> {
    table.insert(format!("{prefix}/{{*rest}}"), slot)?;
    for path in [prefix.to_string(), format!("{prefix}/")] {
        if path.is_empty() {
            continue;
        }
        match table.insert(path, slot) {
            Ok(()) | Err(matchit::InsertError::Conflict { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

/// The `{name}` segments of `pattern` with the segments of `path` in their
/// places, percent-decoded (`/greet/{name}`, `/greet/Ana%20B` → name = "Ana B").
pub fn arguments(pattern: &str, path: &str) -> Vec<(String, String)> {
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(segment, value)| {
            let name = segment.strip_prefix('{')?.strip_suffix('}')?;
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            Some((name.to_string(), decoded))
        })
        .collect()
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
            middleware: Vec::new(),
            action: crate::config::RouteAction::Handler,
            edge: crate::config::RouteEdge::default(),
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
        let router = Router::build(
            &[
                route(0, None, prefix(""), "root"),
                route(1, None, prefix("/api"), "api"),
                route(2, None, exact("/api"), "api-exact"),
                route(3, None, prefix("/api/v2"), "v2"),
            ],
            &[],
        )
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
        let router = Router::build(&[route(0, None, exact("/hello"), "hello")], &[]).expect("ok");
        assert_eq!(handler_for(&router, None, "/hello"), Some("hello"));
        assert_eq!(handler_for(&router, None, "/hello/"), None);
        assert_eq!(handler_for(&router, None, "/hello/x"), None);
        assert_eq!(handler_for(&router, None, "/"), None);
    }

    #[test]
    fn wildcard_hosts_cover_one_label_below_exact_ones() {
        let router = Router::build(
            &[
                route(0, Some("*.example.com"), prefix(""), "tenant"),
                route(1, Some("www.example.com"), prefix(""), "site"),
                route(2, None, prefix(""), "default"),
            ],
            &[],
        )
        .expect("no conflicts");
        assert_eq!(
            handler_for(&router, Some("a.example.com"), "/x"),
            Some("tenant")
        );
        assert_eq!(
            handler_for(&router, Some("www.example.com"), "/"),
            Some("site")
        );
        assert_eq!(
            handler_for(&router, Some("a.b.example.com"), "/"),
            Some("default")
        );
        assert_eq!(
            handler_for(&router, Some("example.com"), "/"),
            Some("default")
        );
    }

    #[test]
    fn host_routes_win_and_fall_back_to_any_host() {
        let router = Router::build(
            &[
                route(0, None, prefix(""), "default"),
                route(1, Some("example.com"), exact("/"), "site"),
            ],
            &[],
        )
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
    fn automatic_routes_serve_their_prefix_but_configured_routes_win() {
        let name = |name: &str| HandlerName::parse(name).expect("valid name");
        let router = Router::build(
            &[
                route(0, None, exact("/b"), "configured"),
                route(1, None, prefix("/c"), "wide"),
            ],
            &[name("a"), name("b"), name("c")],
        )
        .expect("no conflicts");
        assert_eq!(handler_for(&router, None, "/a"), Some("a"));
        assert_eq!(handler_for(&router, None, "/a/x/y"), Some("a"));
        assert_eq!(router.route(None, "/a/").map(|r| &*r.id), Some("auto:a"));
        assert_eq!(handler_for(&router, None, "/b"), Some("configured"));
        assert_eq!(handler_for(&router, None, "/b/x"), Some("b"));
        assert_eq!(handler_for(&router, None, "/c/x"), Some("wide"));
        assert_eq!(handler_for(&router, None, "/d"), None);
    }

    #[test]
    fn braces_in_paths_are_literal() {
        let router = Router::build(&[route(0, None, exact("/a/{id}"), "lit")], &[]).expect("ok");
        assert_eq!(handler_for(&router, None, "/a/{id}"), Some("lit"));
        assert_eq!(handler_for(&router, None, "/a/7"), None);
    }

    #[test]
    fn route_ids_name_the_config_position() {
        let router = Router::build(
            &[
                route(0, None, exact("/a"), "a"),
                route(5, None, prefix("/b"), "b"),
            ],
            &[],
        )
        .expect("ok");
        assert_eq!(router.route(None, "/b/c").map(|r| &*r.id), Some("route[5]"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn segments(max: usize) -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec("[ab]{1,2}", 1..=max)
        }

        proptest! {
            /// Among prefix routes, the longest one that covers the path wins
            /// (a prefix covers itself and what lies below it), and a path no
            /// route covers finds nothing.
            #[test]
            fn the_longest_covering_prefix_wins(
                prefixes in proptest::collection::btree_set(segments(3), 1..8),
                path in segments(4),
                trailing_slash in any::<bool>(),
            ) {
                let prefixes: Vec<String> = prefixes
                    .into_iter()
                    .map(|parts| format!("/{}", parts.join("/")))
                    .collect();
                let routes: Vec<RouteConfig> = prefixes
                    .iter()
                    .enumerate()
                    .map(|(index, path)| route(index, None, prefix(path), &format!("h{index}")))
                    .collect();
                let router = Router::build(&routes, &[]).expect("distinct prefixes build");
                let mut path = format!("/{}", path.join("/"));
                if trailing_slash {
                    path.push('/');
                }
                let expected = prefixes
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| path == **p || path.starts_with(&format!("{p}/")))
                    .max_by_key(|(_, p)| p.len())
                    .map(|(index, _)| format!("h{index}"));
                prop_assert_eq!(handler_for(&router, None, &path).map(str::to_string), expected);
            }

            /// No host and no path makes routing panic.
            #[test]
            fn any_host_and_path_is_routed_without_panicking(
                host in proptest::option::of("\\PC{0,40}"),
                path in "\\PC{0,80}",
            ) {
                let routes = [
                    route(0, None, prefix("/api"), "api"),
                    route(1, Some("*.example.com"), exact("/"), "site"),
                    route(2, None, exact("/a{b}"), "literal"),
                ];
                let router = Router::build(&routes, &[]).expect("builds");
                let _ = router.route(host.as_deref(), &path);
            }
        }
    }
}

//! What composition adds to a handler's or component's settings: which
//! table it is in, its imports, interceptors, capabilities, configuration
//! values and channel subscription, the graph they form, and the routes
//! that publish, invoke or pass through middleware.

use std::collections::{BTreeMap, HashSet};

use super::super::compose::{Capability, ConfigValue, Grants, find_cycle};
use super::super::raw;
use super::super::{
    EnvGrant, HandlerConfig, HandlerName, HandlerWorld, RouteAction, RoutePath, Subscription,
};
use super::{Checker, parse_route_path};

impl Checker<'_> {
    /// Refuses the keys a `[component]` cannot have: it has no route, so no
    /// world, stream, pool, reuse or rollout of its own.
    pub(super) fn handler_only(&mut self, key: &str, raw: &mut raw::RawHandler) {
        let present = [
            ("world", raw.world.take().is_some()),
            ("stream", raw.stream.take().is_some()),
            ("reuse", raw.reuse.take().is_some()),
            ("pool", raw.pool.prewarm.take().is_some()),
            ("split", raw.split.take().is_some()),
            ("rollout", raw.rollout.take().is_some()),
        ];
        for (field, _) in present.iter().filter(|(_, present)| *present) {
            self.problems.push(
                format!("{key}.{field}"),
                "applies to handlers only: a component is instantiated by the handlers that import it, and swaps with its file",
            );
        }
    }

    /// Imports, interceptors, capabilities and configuration values.
    pub(super) fn composed(
        &mut self,
        key: &str,
        raw: &mut raw::RawHandler,
        section: Section,
    ) -> Composed {
        let mut names = |field: &str, list: &[String]| -> Vec<HandlerName> {
            let mut seen = HashSet::new();
            list.iter()
                .enumerate()
                .filter_map(|(index, name)| {
                    let parsed = HandlerName::parse(name);
                    if parsed.is_none() {
                        self.problems.push(
                            format!("{key}.{field}[{index}]"),
                            format!("`{name}` is not a component name"),
                        );
                    } else if !seen.insert(name.clone()) {
                        self.problems.push(
                            format!("{key}.{field}[{index}]"),
                            format!("`{name}` is listed twice"),
                        );
                        return None;
                    }
                    parsed
                })
                .collect()
        };
        let imports = names("imports", &raw.imports);
        let interceptors = names("interceptors", &raw.interceptors);
        let capabilities = match raw.capabilities.take() {
            None => match section {
                Section::Handler => Grants::handler_default(),
                Section::Component => Grants::component_default(),
            },
            Some(list) => Grants::of(list.iter().enumerate().filter_map(|(index, name)| {
                let capability = Capability::parse(name);
                if capability.is_none() {
                    let known: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
                    self.problems.push(
                        format!("{key}.capabilities[{index}]"),
                        format!(
                            "`{name}` is not a capability; the capabilities are {}",
                            known.join(", ")
                        ),
                    );
                }
                capability
            })),
        };
        let config = std::mem::take(&mut raw.config)
            .into_iter()
            .filter_map(|(name, value)| {
                let text = match value {
                    raw::RawValue::Text(text) => text,
                    raw::RawValue::Integer(number) => number.to_string(),
                    raw::RawValue::Float(number) => number.to_string(),
                    raw::RawValue::Bool(flag) => flag.to_string(),
                };
                match ConfigValue::parse(&text) {
                    Ok(value) => Some((name, value)),
                    Err(reason) => {
                        self.problems.push(format!("{key}.config.{name}"), reason);
                        None
                    }
                }
            })
            .collect();
        let subscription = raw.subscription.take().and_then(|subscription| {
            let (channel, function) = match subscription {
                raw::RawSubscription::Channel(channel) => (channel, None),
                raw::RawSubscription::Full { channel, function } => (channel, function),
            };
            if section != Section::Component {
                self.problems.push(
                    format!("{key}.subscription"),
                    "a [component] subscribes to a channel (a handler serves routes)",
                );
                return None;
            }
            if HandlerName::parse(&channel).is_none() {
                self.problems.push(
                    format!("{key}.subscription"),
                    format!(
                        "`{channel}` is not a channel name (lowercase letters, digits, `-`, `_`)"
                    ),
                );
                return None;
            }
            Some(Subscription {
                channel: channel.into(),
                function: function.map(Into::into),
            })
        });
        Composed {
            imports,
            interceptors,
            capabilities,
            config,
            subscription,
        }
    }

    /// Settings that only mean something with a capability need it granted.
    pub(super) fn grants_cover(&mut self, key: &str, config: &HandlerConfig) {
        let needs = [
            ("outbound", !config.outbound.is_empty(), Capability::Http),
            (
                "env",
                config.env != EnvGrant::Keys(Vec::new()),
                Capability::Env,
            ),
            ("config", !config.config.is_empty(), Capability::Config),
            ("files", !config.files.is_empty(), Capability::System),
        ];
        for (field, set, capability) in needs {
            if set && !config.capabilities.has(capability) {
                self.problems.push(
                    format!("{key}.{field}"),
                    format!("needs the `{capability}` capability: add \"{capability}\" to {key}.capabilities"),
                );
            }
        }
    }

    /// Every import and interceptor names a `[component]`, and none depends
    /// on itself through them.
    pub(super) fn composition(&mut self, all: &BTreeMap<HandlerName, HandlerConfig>) {
        let mut edges: BTreeMap<HandlerName, Vec<HandlerName>> = BTreeMap::new();
        for (name, config) in all {
            let section = if config.world == HandlerWorld::Component {
                "component"
            } else {
                "handler"
            };
            if section == "handler" && !config.interceptors.is_empty() {
                self.problems.push(
                    format!("handler.{name}.interceptors"),
                    "interceptors wrap the calls into a [component]'s exports; put them on the component",
                );
            }
            for (field, list) in [
                ("imports", &config.imports),
                ("interceptors", &config.interceptors),
            ] {
                for (index, target) in list.iter().enumerate() {
                    let key = format!("{section}.{name}.{field}[{index}]");
                    match all.get(target) {
                        None => self
                            .problems
                            .push(key, format!("no [component.{target}] is configured")),
                        Some(found) if found.world != HandlerWorld::Component => {
                            self.problems.push(
                                key,
                                format!(
                                    "`{target}` is a [handler]; only a [component] can be {}",
                                    if field == "imports" {
                                        "imported"
                                    } else {
                                        "an interceptor"
                                    }
                                ),
                            );
                        }
                        Some(_) => edges.entry(name.clone()).or_default().push(target.clone()),
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            self.problems.push(
                "component",
                format!("components depend on each other in a cycle ({cycle}) through imports or interceptors"),
            );
        }
    }

    /// What a route does (exactly one of `handler`, `publish`, `invoke`),
    /// and the name it is counted under.
    pub(super) fn route_action(
        &mut self,
        key: &str,
        handlers: &BTreeMap<HandlerName, HandlerConfig>,
        route: &raw::RawRoute,
    ) -> Option<(HandlerName, RouteAction)> {
        if let Some(dir) = &route.static_dir {
            if route.handler.is_some() || route.publish.is_some() || route.invoke.is_some() {
                self.problems.push(
                    key,
                    "a route names exactly one of `handler`, `publish`, `invoke` or `static`",
                );
                return None;
            }
            let dir = self.resolve(dir.clone());
            if !dir.is_dir() {
                self.problems.push(
                    format!("{key}.static"),
                    format!("{} is not a directory", dir.display()),
                );
                return None;
            }
            if !route.path.ends_with("/*") {
                self.problems.push(
                    format!("{key}.path"),
                    "a static route serves a tree of files: its path ends in `/*` (e.g. \"/assets/*\")",
                );
                return None;
            }
            // Canonical once here, so a request resolves only its own
            // file's path to tell whether a link leads out of the root.
            let dir = dir.canonicalize().unwrap_or(dir);
            return Some((HandlerName::static_label(), RouteAction::Static(dir.into())));
        }
        match (&route.handler, &route.publish, &route.invoke) {
            (Some(handler), None, None) => {
                let name = HandlerName(handler.as_str().into());
                match handlers.get(&name) {
                    None => self.problems.push(
                        format!("{key}.handler"),
                        format!("no [handler.{name}] is configured"),
                    ),
                    Some(found) if found.world == HandlerWorld::Component => self.problems.push(
                        format!("{key}.handler"),
                        format!("`{name}` is a [component], which no route can serve; route to a [handler] that imports it, or invoke one of its functions"),
                    ),
                    Some(_) => {}
                }
                Some((name, RouteAction::Handler))
            }
            (None, Some(channel), None) => match HandlerName::parse(channel) {
                Some(_) => Some((
                    HandlerName::channel_label(channel),
                    RouteAction::Publish(channel.as_str().into()),
                )),
                None => {
                    self.problems.push(
                        format!("{key}.publish"),
                        format!("`{channel}` is not a channel name (lowercase letters, digits, `-`, `_`)"),
                    );
                    None
                }
            },
            (None, None, Some(target)) => {
                let parsed = target.split_once('.').and_then(|(component, function)| {
                    let valid = !function.is_empty()
                        && function
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-');
                    Some((HandlerName::parse(component)?, function)).filter(|_| valid)
                });
                let Some((component, function)) = parsed else {
                    self.problems.push(
                        format!("{key}.invoke"),
                        format!("`{target}` is not COMPONENT.FUNCTION, e.g. \"greeter.greet\""),
                    );
                    return None;
                };
                match handlers.get(&component) {
                    Some(found) if found.world == HandlerWorld::Component => {}
                    _ => self.problems.push(
                        format!("{key}.invoke"),
                        format!("no [component.{component}] is configured"),
                    ),
                }
                Some((
                    component,
                    RouteAction::Invoke {
                        function: function.into(),
                    },
                ))
            }
            _ => {
                self.problems.push(
                    key,
                    "a route names exactly one of `handler`, `publish` (a channel), `invoke` (COMPONENT.FUNCTION) or `static` (a directory)",
                );
                None
            }
        }
    }

    /// A route's middleware: HTTP handlers other than its own, each once.
    pub(super) fn middleware(
        &mut self,
        key: &str,
        handler: &HandlerName,
        handlers: &BTreeMap<HandlerName, HandlerConfig>,
        raw: &[String],
    ) -> Vec<HandlerName> {
        let mut chain: Vec<HandlerName> = Vec::new();
        for (index, name) in raw.iter().enumerate() {
            let key = format!("{key}.middleware[{index}]");
            let Some(name) = HandlerName::parse(name) else {
                self.problems
                    .push(key, format!("`{name}` is not a handler name"));
                continue;
            };
            let problem = match handlers.get(&name) {
                None => Some(format!("no [handler.{name}] is configured")),
                Some(found) if found.world != HandlerWorld::Http => Some(format!(
                    "`{name}` is not a wasi:http handler; middleware sees requests as wasi:http"
                )),
                Some(found) if found.reuse.is_some_and(|reuse| reuse.max_concurrent > 1) => {
                    Some(format!(
                        "`{name}` shares instances between requests (reuse.max_concurrent), so it cannot know which request's chain to pass on to"
                    ))
                }
                Some(_) if name == *handler => Some(format!("`{name}` is the route's own handler")),
                Some(_) if chain.contains(&name) => Some(format!("`{name}` is listed twice")),
                Some(_) => None,
            };
            match problem {
                Some(reason) => self.problems.push(key, reason),
                None => chain.push(name),
            }
        }
        chain
    }
}

/// An invocation route's path: exact, and `{name}` segments name the
/// function's arguments.
pub(super) fn parse_invoke_path(path: &str) -> Result<RoutePath, String> {
    let RoutePath::Exact(pattern) = parse_route_path(path)? else {
        return Err(format!(
            "`{path}`: an invocation route is exact; name its arguments with {{name}} segments"
        ));
    };
    for segment in pattern.split('/') {
        let Some(name) = segment
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            if segment.contains(['{', '}']) {
                return Err(format!("`{path}`: a {{name}} argument is a whole segment"));
            }
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("`{path}`: `{{{name}}}` is not an argument name"));
        }
    }
    Ok(RoutePath::Exact(pattern))
}

/// Which table an entry was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Handler,
    Component,
}

impl Section {
    pub(super) fn key(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Component => "component",
        }
    }
}

/// A handler's or component's composition settings, checked.
pub(super) struct Composed {
    pub(super) imports: Vec<HandlerName>,
    pub(super) interceptors: Vec<HandlerName>,
    pub(super) capabilities: Grants,
    pub(super) config: BTreeMap<String, ConfigValue>,
    pub(super) subscription: Option<Subscription>,
}

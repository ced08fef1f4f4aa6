//! The live state a request is served from, built and published as one value.
//!
//! Invariant: a [`Snapshot`] is complete before anyone sees it (every
//! component compiled, type-checked and its pool warmed, every certificate
//! loaded), and a request loads it once and is served entirely by that
//! generation. A rebuild never recompiles a handler whose file and settings
//! are unchanged: it carries the running one over.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::config::{
    Config, GatewaySettings, HandlerConfig, HandlerName, Problem, ProblemList, Problems,
};
use crate::control::metrics::Metrics;
use crate::control::token;
pub use crate::control::versions::{Deployed, Version};
use crate::deploy::Deployments;
use crate::edge::acme::AcmeState;
use crate::edge::tls;
use crate::guest::{CompileCache, GuestEngine, Handler, OutboundClient};
use crate::http::router::Router;

mod handlers;

use handlers::{Settle, Wanted, dependencies_first, plan, trusted_keys};

/// Everything a request needs, for one generation of the configuration.
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    /// The configuration this generation was built from.
    pub config: Arc<Config>,
    /// Host and path → route.
    pub router: Router,
    /// Loaded handlers by name, each with the versions serving it.
    pub handlers: HashMap<HandlerName, Arc<Deployed>>,
    /// TLS configuration per listener (by config index); `None` for plain listeners.
    pub tls: Vec<Option<Arc<ServerConfig>>>,
    /// Why a handler's last load failed, until one succeeds.
    pub load_errors: HashMap<HandlerName, String>,
    /// Each route with middleware (by its id): the middleware's serving
    /// versions, in order, built once for the generation.
    pub chains: HashMap<Arc<str>, Arc<[Arc<Handler>]>>,
}

/// The published snapshot.
pub type Live = ArcSwap<Snapshot>;

impl Snapshot {
    /// The loaded `[component]`s' serving versions, by name.
    pub fn components(&self) -> impl Iterator<Item = (&HandlerName, &Arc<Handler>)> {
        self.handlers
            .iter()
            .map(|(name, deployed)| (name, deployed.stable()))
            .filter(|(_, handler)| handler.library().is_some())
    }

    /// The stable version of the handler called `name`, if loaded.
    pub fn handler(&self, name: &HandlerName) -> Option<&Arc<Handler>> {
        self.handlers.get(name).map(|deployed| deployed.stable())
    }
}

/// What the builder needs besides the configuration: the gateway's
/// long-lived parts, and the `.env` file as it is now.
pub struct Loader<'a> {
    /// The engine components are compiled for.
    engine: &'a Arc<GuestEngine>,
    /// Where compiled components are cached, if anywhere.
    cache: Option<&'a Arc<CompileCache>>,
    /// Where loads, compile times and the handlers' own metrics are counted.
    metrics: &'a Metrics,
    /// The `.env` file beside the config ([`dotenv`]).
    dotenv: HashMap<String, String>,
    /// The pooled client for guests' outbound requests.
    client: &'a Arc<OutboundClient>,
    /// Certificates obtained through ACME, consulted by the TLS configurations.
    acme: &'a Arc<AcmeState>,
    /// Versions, candidates and the audit trail.
    deployments: &'a Arc<Deployments>,
    /// Who asked for this build, for the audit trail.
    actor: String,
}

impl<'a> Loader<'a> {
    /// The loader for a build from `config_file`: start-up and every reload
    /// make theirs here, so both see the same parts and read the `.env`
    /// file beside the config anew.
    pub fn new(
        config_file: &Path,
        engine: &'a Arc<GuestEngine>,
        cache: Option<&'a Arc<CompileCache>>,
        metrics: &'a Metrics,
        client: &'a Arc<OutboundClient>,
        acme: &'a Arc<AcmeState>,
        deployments: &'a Arc<Deployments>,
    ) -> Self {
        Self {
            engine,
            cache,
            metrics,
            dotenv: dotenv(config_file),
            client,
            acme,
            deployments,
            actor: "start-up".into(),
        }
    }

    /// Names who asked for the build (the file watcher, SIGHUP, the admin
    /// API and its client, the rollout controller) in the audit trail.
    #[must_use]
    pub fn acting_for(mut self, actor: &str) -> Self {
        actor.clone_into(&mut self.actor);
        self
    }
}

/// The variables of the `.env` file beside `config_file`, if there is one;
/// a file that cannot be parsed is logged and ignored. The process is not
/// touched: values reach only the guests granted their keys.
fn dotenv(config_file: &Path) -> HashMap<String, String> {
    let path = config_file.parent().unwrap_or(Path::new("")).join(".env");
    let entries = match dotenvy::from_path_iter(&path) {
        Ok(entries) => entries,
        Err(error) if error.not_found() => return HashMap::new(),
        Err(error) => {
            tracing::warn!(path = %path.display(), "ignoring the .env file: {error}");
            return HashMap::new();
        }
    };
    entries
        .filter_map(|entry| {
            entry
                .inspect_err(|error| {
                    tracing::warn!(path = %path.display(), "ignoring a .env line: {error}");
                })
                .ok()
        })
        .collect()
}

/// A rebuilt snapshot and what went wrong on the way (each problem left the
/// previous version of what it concerns in place).
pub struct Rebuilt {
    /// The next generation.
    pub snapshot: Snapshot,
    /// Handlers or certificates that could not be (re)loaded.
    pub problems: Vec<Problem>,
    /// How the handlers were obtained.
    pub counts: Counts,
    /// New files whose handlers roll new versions out gradually: the
    /// rollout controller takes them from here.
    pub arrivals: Vec<(HandlerName, String)>,
}

/// How a build obtained its handlers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Compiled now.
    pub compiled: usize,
    /// Mapped from the compile cache.
    pub cached: usize,
    /// Unchanged, carried over from the previous generation.
    pub carried: usize,
    /// Kept at their previous version because the new file failed.
    pub kept: usize,
}

/// Builds the first generation: every problem is fatal (and all are reported).
pub async fn build(loader: &Loader<'_>, config: Config) -> Result<Snapshot, Problems> {
    match assemble(loader, config, None).await {
        Ok(built) if built.problems.is_empty() => Ok(built.snapshot),
        Ok(Rebuilt { problems, .. }) | Err(problems) => Err(Problems(problems)),
    }
}

/// Builds the generation after `previous`: a handler or certificate that
/// fails to load keeps its previous version. A generation that cannot be
/// built whole (its router) is not built at all: every problem is returned
/// and `previous` stays live.
pub async fn rebuild(
    loader: &Loader<'_>,
    config: Config,
    previous: &Snapshot,
) -> Result<Rebuilt, Vec<Problem>> {
    assemble(loader, config, Some(previous)).await
}

async fn assemble(
    loader: &Loader<'_>,
    config: Config,
    previous: Option<&Snapshot>,
) -> Result<Rebuilt, Vec<Problem>> {
    let mut problems = ProblemList::new(&config.source);
    let mut counts = Counts::default();
    let automatic = if config.gateway.auto_routes {
        discover(&config.gateway, &config.handlers)
    } else {
        Vec::new()
    };
    let mut wanted: Vec<Wanted> = config
        .handlers
        .iter()
        .map(|(name, handler)| (name.clone(), handler.clone()))
        .chain(automatic.iter().cloned())
        .map(|(name, handler)| Wanted {
            policy: config
                .handler_deploy
                .get(&name)
                .cloned()
                .unwrap_or_default(),
            name,
            config: handler,
        })
        .collect();
    dependencies_first(&mut wanted);
    let unconfigured: HashSet<HandlerName> =
        automatic.iter().map(|(name, _)| name.clone()).collect();
    let running: HashMap<HandlerName, Arc<Deployed>> = previous
        .map(|snapshot| snapshot.handlers.clone())
        .unwrap_or_default();
    let keys = trusted_keys(&config, &mut problems);
    let mut handlers = HashMap::new();
    let mut load_errors = HashMap::new();
    let mut arrivals = Vec::new();
    let mut components = HashMap::new();
    for (wanted, planned) in plan(loader, wanted, &running, keys).await {
        let name = wanted.name.clone();
        let running_stable = running
            .get(&name)
            .map(|deployed| Arc::clone(deployed.stable()));
        if let Some(sha) = planned.arrival.clone() {
            arrivals.push((name.clone(), sha));
        }
        let mut settle = Settle {
            loader,
            wanted: &wanted,
            previous,
            counts: &mut counts,
            problems: &mut problems,
            load_errors: &mut load_errors,
            unconfigured: unconfigured.contains(&name),
            components: &components,
        };
        if let Some(deployed) = settle.versions(planned, running_stable).await {
            if wanted.config.world == crate::config::HandlerWorld::Component {
                components.insert(name.clone(), Arc::clone(deployed.stable()));
            }
            handlers.insert(name, Arc::new(deployed));
        }
    }

    let tls = load_tls(&config, loader.acme, previous, &mut problems);
    for (key, reason) in crate::edge::acme::file_problems(&config) {
        problems.push(key, reason);
    }
    if let Some(Err(reason)) = config.admin_token.as_deref().map(token::read) {
        problems.push("admin.token_file", reason);
    }
    let served_automatically: Vec<HandlerName> = automatic
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| handlers.contains_key(name))
        .collect();
    let router = match Router::build(&config.routes, &served_automatically) {
        Ok(router) => router,
        Err(conflict) => {
            problems.push("route", conflict.to_string());
            return Err(config.locate(problems.into_problems()));
        }
    };
    // Only a compilation adds entries; a reload served from the cache (a
    // rollback) has nothing to prune and should not pay for listing it.
    if let Some(cache) = loader.cache.filter(|_| counts.compiled > 0) {
        let in_use: HashSet<_> = handlers
            .values()
            .flat_map(|deployed| deployed.versions.iter())
            .map(|version| version.handler.hash().clone())
            .collect();
        cache.prune(&in_use);
    }
    let chains = chains(&config, &handlers);
    composition_problems(&config, &handlers, &mut problems);
    let generation = previous.map_or(1, |snapshot| snapshot.generation + 1);
    let problems = config.locate(problems.into_problems());
    Ok(Rebuilt {
        snapshot: Snapshot {
            generation,
            config: Arc::new(config),
            router,
            handlers,
            tls,
            load_errors,
            chains,
        },
        problems,
        counts,
        arrivals,
    })
}

/// Each route's middleware, by route id: their serving versions, in order;
/// a route whose middleware are not all loaded has none (it answers 503).
fn chains(
    config: &Config,
    handlers: &HashMap<HandlerName, Arc<Deployed>>,
) -> HashMap<Arc<str>, Arc<[Arc<Handler>]>> {
    config
        .routes
        .iter()
        .filter(|route| !route.middleware.is_empty())
        .filter_map(|route| {
            let links: Option<Vec<Arc<Handler>>> = route
                .middleware
                .iter()
                .map(|name| {
                    handlers
                        .get(name)
                        .map(|deployed| Arc::clone(deployed.stable()))
                })
                .collect();
            Some((Arc::from(route.id()), Arc::from(links?)))
        })
        .collect()
}

/// What only the loaded components can tell: an invocation route's
/// function and a subscription's function exist.
fn composition_problems(
    config: &Config,
    handlers: &HashMap<HandlerName, Arc<Deployed>>,
    problems: &mut ProblemList,
) {
    let library = |name: &HandlerName| {
        handlers
            .get(name)
            .and_then(|deployed| deployed.stable().library())
    };
    for route in &config.routes {
        if let crate::config::RouteAction::Invoke { function } = &route.action
            && library(&route.handler).is_some_and(|library| !library.exports_function(function))
        {
            problems.push(
                format!("{}.invoke", route.id()),
                format!(
                    "component `{}` exports no function `{function}`",
                    route.handler
                ),
            );
        }
    }
    for (name, deployed) in handlers {
        let (Some(subscription), Some(library)) =
            (&deployed.stable().config().subscription, library(name))
        else {
            continue;
        };
        let reason = match &subscription.function {
            Some(function) if !library.exports_function(function) => {
                format!("the component exports no function `{function}`")
            }
            None if library.single_string_function().is_none() => "the component does not export exactly one function taking one string: name it with subscription = { channel = \"...\", function = \"...\" }".to_string(),
            _ => continue,
        };
        problems.push(format!("component.{name}.subscription"), reason);
    }
}

/// Keeps the per-version series to the versions serving in `after`: drops
/// those of versions that stopped serving, sets every serving one's share.
pub fn record_versions(metrics: &Metrics, before: Option<&Snapshot>, after: &Snapshot) {
    let serving = |snapshot: &Snapshot| -> HashSet<(HandlerName, String, Arc<str>)> {
        snapshot
            .handlers
            .iter()
            .flat_map(|(name, deployed)| {
                deployed.versions.iter().map(move |version| {
                    let short = version.handler.hash().to_string();
                    (name.clone(), short, Arc::clone(&version.name))
                })
            })
            .collect()
    };
    let now = serving(after);
    if let Some(before) = before {
        for (name, short, label) in serving(before).difference(&now) {
            let still = now.iter().any(|(n, s, _)| n == name && s == short);
            if still {
                let _ = metrics
                    .rollout_weight
                    .remove_label_values(&[name.as_str(), short, label]);
            } else {
                metrics.forget_version(name.as_str(), short, label);
            }
        }
    }
    for (name, deployed) in &after.handlers {
        for version in &deployed.versions {
            let short = version.handler.hash().to_string();
            metrics
                .rollout_weight
                .with_label_values(&[name.as_str(), &short, &version.name])
                .set(f64::from(version.weight) / 100.0);
        }
    }
}

/// Unconfigured `<name>.wasm` files in `dir`, with default settings.
fn discover(
    gateway: &GatewaySettings,
    configured: &std::collections::BTreeMap<HandlerName, HandlerConfig>,
) -> Vec<(HandlerName, HandlerConfig)> {
    let Ok(listing) = std::fs::read_dir(&gateway.handlers_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(HandlerName, HandlerConfig)> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "wasm")
        })
        .filter_map(|path: PathBuf| {
            let name = HandlerName::parse(path.file_stem()?.to_str()?)?;
            (!configured.contains_key(&name))
                .then(|| (name, HandlerConfig::defaults(path, &gateway.limits)))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// TLS configurations by listener; a pair that fails keeps the previous
/// generation's configuration for that listener, if there was one.
fn load_tls(
    config: &Config,
    acme: &Arc<AcmeState>,
    previous: Option<&Snapshot>,
    problems: &mut ProblemList,
) -> Vec<Option<Arc<ServerConfig>>> {
    config
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let files = listener.tls.as_ref()?;
            match tls::server_config(files, acme) {
                Ok(server) => Some(server),
                Err(found) => {
                    let kept =
                        previous.and_then(|snapshot| snapshot.tls.get(index).cloned().flatten());
                    let suffix = if kept.is_some() {
                        " (the previous certificate stays in use)"
                    } else {
                        ""
                    };
                    for problem in found {
                        problems.push(
                            format!("listener[{index}].tls.{}", problem.key),
                            format!("{}{suffix}", problem.reason),
                        );
                    }
                    kept
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, RoutePath};

    /// A valid configuration with two routes and no component to load.
    fn routes_only() -> Config {
        let text = r#"
            [[listener]]
            addr = "127.0.0.1:0"

            [handler.a]

            [[route]]
            path = "/a"
            handler = "a"

            [[route]]
            path = "/b"
            handler = "a"
        "#;
        let mut config = Config::parse(Path::new("/nonexistent/wasmgate.toml"), text)
            .unwrap_or_else(|invalid| panic!("valid config: {}", invalid.problems));
        config.handlers.clear();
        config
    }

    #[tokio::test]
    async fn a_reload_whose_router_cannot_be_built_publishes_nothing() {
        let engine = Arc::new(GuestEngine::new(4, false).expect("engine"));
        let metrics = Metrics::new(prometheus::Registry::new()).expect("metrics");
        let client = Arc::new(OutboundClient::new());
        let acme = Arc::new(AcmeState::default());
        let config = routes_only();
        let deployments = Arc::new(Deployments::new(
            crate::deploy::VersionStore::open(None, 10).expect("in memory"),
            crate::deploy::Audit::none(),
        ));
        let loader = Loader::new(
            &config.source,
            &engine,
            None,
            &metrics,
            &client,
            &acme,
            &deployments,
        );
        let first = build(&loader, config.clone())
            .await
            .expect("first generation");
        assert!(first.router.route(None, "/a").is_some());

        // The checker refuses duplicate routes; one that slips past it must
        // not leave a generation with no routes at all.
        let mut conflicting = config;
        let duplicate = RouteConfig {
            index: 2,
            host: None,
            path: RoutePath::Exact("/a".into()),
            handler: conflicting.routes[0].handler.clone(),
            middleware: Vec::new(),
            action: crate::config::RouteAction::Handler,
            edge: crate::config::RouteEdge::default(),
        };
        conflicting.routes.push(duplicate);
        let Err(problems) = rebuild(&loader, conflicting, &first).await else {
            panic!("a generation without its routes was built for publishing");
        };
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            reasons
                .iter()
                .any(|reason| reason.contains("route[2] `/a` cannot be added")),
            "{reasons:?}"
        );
    }
}

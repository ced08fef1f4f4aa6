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

use crate::config::deploy::FULL;
use crate::config::{
    Config, GatewaySettings, HandlerConfig, HandlerDeploy, HandlerName, Problem, ProblemList,
    Problems,
};
use crate::control::metrics::Metrics;
use crate::control::token;
use crate::control::versions::{self, HandlerPlan, Plan, Planned, Role};
pub use crate::control::versions::{Deployed, Version};
use crate::deploy::signing::PublicKey;
use crate::deploy::{Deployments, Entry};
use crate::edge::acme::AcmeState;
use crate::edge::tls;
use crate::guest::{
    CompileCache, ComponentFile, GuestEngine, Handler, LoadError, Loaded, Origin, OutboundClient,
    Services,
};
use crate::http::router::Router;

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
}

/// The published snapshot.
pub type Live = ArcSwap<Snapshot>;

impl Snapshot {
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
    let wanted: Vec<Wanted> = config
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
    let unconfigured: HashSet<HandlerName> =
        automatic.iter().map(|(name, _)| name.clone()).collect();
    let running: HashMap<HandlerName, Arc<Deployed>> = previous
        .map(|snapshot| snapshot.handlers.clone())
        .unwrap_or_default();
    let keys = trusted_keys(&config, &mut problems);
    let mut handlers = HashMap::new();
    let mut load_errors = HashMap::new();
    let mut arrivals = Vec::new();
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
        };
        if let Some(deployed) = settle.versions(planned, running_stable).await {
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
            return Err(problems.into_problems());
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
    let generation = previous.map_or(1, |snapshot| snapshot.generation + 1);
    Ok(Rebuilt {
        snapshot: Snapshot {
            generation,
            config: Arc::new(config),
            router,
            handlers,
            tls,
            load_errors,
        },
        problems: problems.into_problems(),
        counts,
        arrivals,
    })
}

/// One handler to build: its name, settings and deployment policy.
struct Wanted {
    name: HandlerName,
    config: HandlerConfig,
    policy: HandlerDeploy,
}

/// The keys each handler trusts: its own `trusted_keys`, else the
/// gateway's; `None` where no signature is needed.
#[derive(Clone)]
struct Trust {
    gateway: Option<Arc<[PublicKey]>>,
    handlers: HashMap<HandlerName, Option<Arc<[PublicKey]>>>,
}

impl Trust {
    fn of(&self, name: &HandlerName) -> Option<Arc<[PublicKey]>> {
        self.handlers.get(name).unwrap_or(&self.gateway).clone()
    }
}

/// Reads the trusted key files. An unreadable one is a problem and trusts
/// nothing (a handler that asked for signatures never runs unsigned code).
fn trusted_keys(config: &Config, problems: &mut ProblemList) -> Trust {
    let mut read = |key: String, paths: &[PathBuf]| -> Option<Arc<[PublicKey]>> {
        if paths.is_empty() {
            return None;
        }
        let keys: Vec<PublicKey> = paths
            .iter()
            .enumerate()
            .filter_map(|(index, path)| {
                PublicKey::read(path)
                    .inspect_err(|reason| problems.push(format!("{key}[{index}]"), reason.clone()))
                    .ok()
            })
            .collect();
        Some(Arc::from(keys))
    };
    let gateway = read("deploy.trusted_keys".into(), &config.deploy.trusted_keys);
    let mut handlers = HashMap::new();
    for (name, policy) in &config.handler_deploy {
        if let Some(paths) = &policy.trusted_keys {
            handlers.insert(
                name.clone(),
                read(format!("handler.{name}.trusted_keys"), paths),
            );
        }
    }
    Trust { gateway, handlers }
}

/// What one handler's planned versions became.
struct Settle<'a, 'b> {
    loader: &'a Loader<'b>,
    wanted: &'a Wanted,
    previous: Option<&'a Snapshot>,
    counts: &'a mut Counts,
    problems: &'a mut ProblemList,
    load_errors: &'a mut HashMap<HandlerName, String>,
    unconfigured: bool,
}

impl Settle<'_, '_> {
    /// Starts the planned versions, writes back what changed (history,
    /// candidate), and returns what serves the handler, if anything does.
    async fn versions(
        &mut self,
        planned: HandlerPlan,
        running_stable: Option<Arc<Handler>>,
    ) -> Option<Deployed> {
        let name = &self.wanted.name;
        let deployments = self.loader.deployments;
        let mut versions: Vec<Version> = Vec::new();
        let mut stable_carried = false;
        for version in planned.versions {
            let Planned {
                role,
                sha256,
                plan,
                keep,
                signed_by,
            } = version;
            if matches!(role, Role::Stable) {
                stable_carried = matches!(plan, Plan::Carry(_));
            }
            let started = match plan {
                Plan::Carry(running) => {
                    self.counts.carried += 1;
                    Ok(running)
                }
                Plan::Start(loaded) => {
                    start(
                        self.loader,
                        name,
                        &self.wanted.config,
                        loaded,
                        running_stable.as_deref(),
                        self.counts,
                    )
                    .await
                }
                Plan::Failed(error) => Err(error),
            };
            let short = sha256
                .as_deref()
                .map_or("-", |sha| &sha[..12.min(sha.len())]);
            match (role, started) {
                (Role::Stable, Ok(handler)) => {
                    if planned.swap && !stable_carried {
                        self.swapped(&handler, keep, signed_by).await;
                    }
                    versions.push(self.version("stable", handler, 0));
                }
                (Role::Stable, Err(error)) => {
                    self.refused(short, "stable", &error);
                    let failure = Failure {
                        name,
                        path: &self.wanted.config.path,
                        error,
                        unconfigured: self.unconfigured,
                    };
                    let kept = failure.settle(running_stable.as_ref(), self.problems, self.counts);
                    match kept {
                        Some(handler) => versions.push(self.version("stable", handler, 0)),
                        None => return None,
                    }
                }
                (Role::Candidate(candidate), Ok(handler)) => {
                    let label = Arc::clone(&candidate.name);
                    versions.push(self.version(&label, handler, candidate.weight));
                }
                (Role::Candidate(candidate), Err(error)) => {
                    self.refused(short, &candidate.name, &error);
                    self.problems.push(
                        format!("handler.{name}"),
                        format!(
                            "version {short} ({}) cannot be loaded: {error}; its rollout is stopped",
                            candidate.name
                        ),
                    );
                    if deployments
                        .update_candidate(name, candidate.id, |_| {})
                        .is_some()
                    {
                        deployments.set_candidate(name, None);
                    }
                }
                (Role::Previous, Ok(handler)) => {
                    versions.push(self.version("previous", handler, 0));
                }
                (Role::Previous, Err(error)) => {
                    tracing::warn!(
                        handler = name.as_str(),
                        version = short,
                        "the previous version cannot be kept warm: {error}"
                    );
                }
            }
        }
        if let (Some(error), Some(stable)) = (planned.file_error, versions.first()) {
            // The stable version came from the store; the file is still
            // reported (and retried at every reload) until it loads.
            self.refused("-", "file", &error);
            let failure = Failure {
                name,
                path: &self.wanted.config.path,
                error,
                unconfigured: self.unconfigured,
            };
            failure.settle(Some(&stable.handler), self.problems, self.counts);
        }
        let given: u32 = versions.iter().skip(1).map(|version| version.weight).sum();
        versions[0].weight = FULL.saturating_sub(given);
        // Carried over unchanged: an earlier failure stays reported until
        // a new version loads.
        if let Some(error) = self
            .previous
            .and_then(|snapshot| snapshot.load_errors.get(name))
            .filter(|_| stable_carried && !self.load_errors.contains_key(name))
        {
            self.load_errors.insert(name.clone(), error.clone());
        }
        Some(Deployed {
            versions,
            split: self.wanted.policy.split.clone(),
        })
    }

    fn version(&self, label: &str, handler: Arc<Handler>, weight: u32) -> Version {
        let series = self
            .loader
            .metrics
            .version(self.wanted.name.as_str(), &handler.hash().to_string());
        Version {
            name: Arc::from(label),
            handler,
            weight,
            series,
        }
    }

    /// A new file took over at once: it joins the history as stable.
    async fn swapped(
        &mut self,
        handler: &Arc<Handler>,
        keep: Option<ComponentFile>,
        signed_by: Option<String>,
    ) {
        let name = self.wanted.name.clone();
        let deployments = Arc::clone(self.loader.deployments);
        let sha = handler.hash().as_str().to_string();
        let stored = {
            let (name, sha) = (name.clone(), sha.clone());
            let deployments = Arc::clone(&deployments);
            tokio::task::spawn_blocking(move || {
                if let Some(file) = keep {
                    deployments
                        .store
                        .put(&name, &sha, file.bytes(), "file", signed_by)?;
                }
                Ok::<_, String>(deployments.store.update(&name, |history| {
                    if history.stable.as_ref() != Some(&sha) {
                        history.previous = history.stable.take();
                    }
                    history.stable = Some(sha.clone());
                    history.file = Some(sha.clone());
                }))
            })
            .await
        };
        let previous = match stored {
            Ok(Ok(history)) => history.previous,
            Ok(Err(error)) => {
                tracing::error!(handler = name.as_str(), "cannot keep the version: {error}");
                None
            }
            Err(join) => {
                tracing::error!(
                    handler = name.as_str(),
                    "keeping the version failed: {join}"
                );
                None
            }
        };
        let event = if previous.is_some() {
            "swapped"
        } else {
            "loaded"
        };
        deployments.audit.record(
            Entry::new(event, &self.loader.actor)
                .with("handler", name.as_str())
                .with("version", sha)
                .with("from", previous)
                .with("outcome", "serving"),
        );
    }

    /// Counts, records and reports a version that cannot serve.
    fn refused(&mut self, short: &str, role: &str, error: &LoadError) {
        let name = self.wanted.name.as_str();
        self.loader
            .metrics
            .swaps
            .with_label_values(&[name, "failed"])
            .inc();
        let event = match error {
            LoadError::Signature(refused) => {
                self.loader
                    .metrics
                    .signature_refused
                    .with_label_values(&[name, refused.label()])
                    .inc();
                "signature_refused"
            }
            _ => "refused",
        };
        self.load_errors
            .insert(self.wanted.name.clone(), error.to_string());
        self.loader.deployments.audit.record(
            Entry::new(event, &self.loader.actor)
                .with("handler", name)
                .with("version", short)
                .with("role", role)
                .with("outcome", "refused")
                .with("reason", error.to_string()),
        );
    }
}

/// Starts a freshly loaded handler (instantiating it once and warming its pool).
async fn start(
    loader: &Loader<'_>,
    name: &HandlerName,
    handler_config: &HandlerConfig,
    loaded: Loaded,
    previous: Option<&Handler>,
    counts: &mut Counts,
) -> Result<Arc<Handler>, LoadError> {
    let (origin, hash, load_time) = (loaded.origin, loaded.hash.clone(), loaded.load_time);
    let services = Services {
        metrics: loader.metrics,
        dotenv: &loader.dotenv,
        client: loader.client,
    };
    let handler = Handler::start(name, handler_config, loaded, &services, previous).await?;
    match origin {
        Origin::Compiled => {
            counts.compiled += 1;
            loader
                .metrics
                .compile_duration
                .with_label_values(&[name.as_str()])
                .observe(load_time.as_secs_f64());
        }
        Origin::Cache => counts.cached += 1,
    }
    loader
        .metrics
        .swaps
        .with_label_values(&[name.as_str(), "loaded"])
        .inc();
    tracing::info!(
        handler = name.as_str(),
        path = %handler_config.path.display(),
        %hash,
        ?origin,
        load_ms = load_time.as_millis() as u64,
        "component loaded"
    );
    Ok(Arc::new(handler))
}

/// A handler whose new version could not be loaded.
struct Failure<'a> {
    name: &'a HandlerName,
    path: &'a Path,
    error: LoadError,
    unconfigured: bool,
}

impl Failure<'_> {
    /// Keeps the running version, if there is one, and reports: a deleted
    /// file with a warning, a bad file as a problem, and a bad file nobody
    /// configured (auto routes) as an error that must not stop the gateway.
    fn settle(
        self,
        running: Option<&Arc<Handler>>,
        problems: &mut ProblemList,
        counts: &mut Counts,
    ) -> Option<Arc<Handler>> {
        let Self {
            name,
            path,
            error,
            unconfigured,
        } = self;
        let path = path.display();
        let deleted =
            matches!(&error, LoadError::Read(io) if io.kind() == std::io::ErrorKind::NotFound);
        match running {
            Some(old) => {
                counts.kept += 1;
                if deleted {
                    tracing::warn!(
                        handler = name.as_str(),
                        %path,
                        "component file deleted; the last good version keeps serving"
                    );
                } else {
                    problems.push(
                        format!("handler.{name}.path"),
                        format!("{path}: {error} (the previous version keeps serving)"),
                    );
                }
                Some(Arc::clone(old))
            }
            None if unconfigured => {
                tracing::error!(handler = name.as_str(), %path, "not served: {error}");
                None
            }
            None => {
                problems.push(format!("handler.{name}.path"), format!("{path}: {error}"));
                None
            }
        }
    }
}

/// Reads every wanted file and compiles the changed versions, on a
/// blocking thread (compilation is CPU-bound and would stall an async worker).
async fn plan(
    loader: &Loader<'_>,
    wanted: Vec<Wanted>,
    running: &HashMap<HandlerName, Arc<Deployed>>,
    keys: Trust,
) -> Vec<(Wanted, HandlerPlan)> {
    let engine = Arc::clone(loader.engine);
    let cache = loader.cache.cloned();
    let deployments = Arc::clone(loader.deployments);
    let running = running.clone();
    let shapes: Vec<Wanted> = wanted
        .iter()
        .map(|w| Wanted {
            name: w.name.clone(),
            config: w.config.clone(),
            policy: w.policy.clone(),
        })
        .collect();
    let planned = tokio::task::spawn_blocking(move || {
        let cx = versions::Context {
            engine: &engine,
            cache: cache.as_deref(),
            deployments: &deployments,
        };
        wanted
            .into_iter()
            .map(|wanted| {
                let trusted = keys.of(&wanted.name);
                let planned = versions::plan_handler(
                    &cx,
                    &wanted.name,
                    &wanted.config,
                    &wanted.policy,
                    trusted.as_deref(),
                    running.get(&wanted.name).map(Arc::as_ref),
                );
                (wanted, planned)
            })
            .collect()
    });
    // Cranelift cannot be interrupted, but a build need not wait for a
    // compile that runs away: it fails like a bad file would (the thread
    // finishes in the background), and the running versions stay. So does a
    // panic while compiling, a bug here or in wasmtime.
    let failure = match tokio::time::timeout(LOAD_LIMIT, planned).await {
        Ok(Ok(planned)) => return planned,
        Ok(Err(join)) => {
            tracing::error!("loading components panicked: {join}");
            format!("the loader panicked: {join}")
        }
        Err(_elapsed) => format!(
            "loading took longer than {}",
            humantime::format_duration(LOAD_LIMIT)
        ),
    };
    shapes
        .into_iter()
        .map(|wanted| {
            let failed = Planned {
                role: Role::Stable,
                sha256: None,
                plan: Plan::Failed(LoadError::Compile(failure.clone())),
                keep: None,
                signed_by: None,
            };
            let plan = HandlerPlan {
                versions: vec![failed],
                swap: false,
                arrival: None,
                file_error: None,
            };
            (wanted, plan)
        })
        .collect()
}

/// How long reading and compiling one build's components may take.
const LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

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
        let engine = Arc::new(GuestEngine::new(4).expect("engine"));
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

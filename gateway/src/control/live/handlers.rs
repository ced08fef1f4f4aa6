//! One generation's handlers: the keys each trusts, the plan of its
//! versions (read, verified, compiled on a blocking thread by
//! [`crate::control::versions`]), then starting them, writing a swap into
//! the history and the audit trail, and keeping the running version when a
//! new one fails.
//!
//! Invariant: nothing here publishes; a version that fails to start changes
//! neither the history nor the candidate beyond taking that candidate out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Counts, Deployed, Loader, Snapshot, Version};
use crate::config::deploy::FULL;
use crate::config::{Config, HandlerConfig, HandlerDeploy, HandlerName, HandlerWorld, ProblemList};
use crate::control::versions::{self, HandlerPlan, Plan, Planned, Role};
use crate::deploy::Entry;
use crate::deploy::signing::PublicKey;
use crate::guest::{ComponentFile, Handler, LoadError, Loaded, Origin, Services};

/// One handler to build: its name, settings and deployment policy.
pub(super) struct Wanted {
    pub(super) name: HandlerName,
    pub(super) config: HandlerConfig,
    pub(super) policy: HandlerDeploy,
}

/// The keys each handler trusts: its own `trusted_keys`, else the
/// gateway's; `None` where no signature is needed.
#[derive(Clone)]
pub(super) struct Trust {
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
pub(super) fn trusted_keys(config: &Config, problems: &mut ProblemList) -> Trust {
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
pub(super) struct Settle<'a, 'b> {
    pub(super) loader: &'a Loader<'b>,
    pub(super) wanted: &'a Wanted,
    pub(super) previous: Option<&'a Snapshot>,
    pub(super) counts: &'a mut Counts,
    pub(super) problems: &'a mut ProblemList,
    pub(super) load_errors: &'a mut HashMap<HandlerName, String>,
    pub(super) unconfigured: bool,
    /// The `[component]`s this generation has started so far.
    pub(super) components: &'a HashMap<HandlerName, Arc<Handler>>,
}

impl Settle<'_, '_> {
    /// Starts the planned versions, writes back what changed (history,
    /// candidate), and returns what serves the handler, if anything does.
    pub(super) async fn versions(
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
                Plan::Carry(running) if running.wired_to_current(self.components) => {
                    self.counts.carried += 1;
                    Ok(running)
                }
                Plan::Carry(running) => {
                    // A component it imports changed: the same version, wired
                    // to the new one, takes over in the same generation.
                    self.counts.carried += 1;
                    let services = services(self.loader, self.components);
                    tracing::info!(
                        handler = name.as_str(),
                        "wired again to a new version of a component it uses"
                    );
                    running.rewire(name, &services).await.map(Arc::new)
                }
                Plan::Start(loaded) => {
                    start(
                        self.loader,
                        name,
                        &self.wanted.config,
                        loaded,
                        running_stable.as_deref(),
                        self.counts,
                        self.components,
                    )
                    .await
                }
                Plan::Failed(error) => Err(error),
            };
            let short = sha256.as_deref().map_or("-", crate::deploy::short);
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
                        world: self.wanted.config.world,
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
                    deployments.end_candidate(name, candidate.id);
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
                world: self.wanted.config.world,
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
    components: &HashMap<HandlerName, Arc<Handler>>,
) -> Result<Arc<Handler>, LoadError> {
    let (origin, hash, load_time) = (loaded.origin, loaded.hash.clone(), loaded.load_time);
    let services = services(loader, components);
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

/// The table a handler's or component's keys are reported under.
fn section(world: HandlerWorld) -> &'static str {
    match world {
        HandlerWorld::Component => "component",
        _ => "handler",
    }
}

fn services<'a>(
    loader: &'a Loader<'_>,
    components: &'a HashMap<HandlerName, Arc<Handler>>,
) -> Services<'a> {
    Services {
        engine: loader.engine,
        components,
        metrics: loader.metrics,
        dotenv: &loader.dotenv,
        client: loader.client,
    }
}

/// Orders `wanted` so that every component comes after those its imports
/// and interceptors name (the config refuses cycles), keeping the order
/// otherwise.
pub(super) fn dependencies_first(wanted: &mut [Wanted]) {
    let configs: HashMap<HandlerName, &HandlerConfig> =
        wanted.iter().map(|w| (w.name.clone(), &w.config)).collect();
    /// How many components `name` depends on through the longest chain;
    /// each name is walked once (`known`), and `seen` stops a cycle the
    /// config check would have refused.
    fn depth(
        name: &HandlerName,
        configs: &HashMap<HandlerName, &HandlerConfig>,
        known: &mut HashMap<HandlerName, usize>,
        seen: usize,
    ) -> usize {
        if let Some(depth) = known.get(name) {
            return *depth;
        }
        let Some(config) = configs.get(name).filter(|_| seen <= configs.len()) else {
            return 0;
        };
        let depth = config
            .imports
            .iter()
            .chain(&config.interceptors)
            .map(|dependency| 1 + depth(dependency, configs, known, seen + 1))
            .max()
            .unwrap_or(0);
        known.insert(name.clone(), depth);
        depth
    }
    let mut depths = HashMap::new();
    for name in configs.keys() {
        depth(name, &configs, &mut depths, 0);
    }
    wanted.sort_by_key(|w| depths.get(&w.name).copied().unwrap_or(0));
}

/// A handler whose new version could not be loaded.
struct Failure<'a> {
    name: &'a HandlerName,
    path: &'a Path,
    world: HandlerWorld,
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
            world: self_world,
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
                        format!("{}.{name}.path", section(self_world)),
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
                problems.push(
                    format!("{}.{name}.path", section(self_world)),
                    format!("{path}: {error}"),
                );
                None
            }
        }
    }
}

/// Reads every wanted file and compiles the changed versions, on a
/// blocking thread (compilation is CPU-bound and would stall an async worker).
pub(super) async fn plan(
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

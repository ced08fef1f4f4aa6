//! Start-up and shutdown: a configuration becomes a [`Prepared`] gateway
//! (everything loaded, no public port bound), then a running [`Gateway`]
//! (ports bound or inherited, accept loops, reloads), then a drained one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use crate::app::{App, Parts};
use crate::cluster::Cluster;
use crate::config::{Config, Problem, ProblemList, Problems};
use crate::control::live::Snapshot;
use crate::control::metrics::Metrics;
use crate::control::reload::Reloader;
use crate::control::rollout::Controller;
use crate::control::{admin, live, reload};
use crate::deploy::{Audit, Deployments, VersionStore};
use crate::edge::activation::Activated;
use crate::edge::handover::{Inherited, SocketKey};
use crate::edge::listener::Bound;
use crate::edge::{acme, handover, listener};
use crate::guest::{CompileCache, GuestEngine, OutboundClient};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, or a file it names, is invalid.
    #[error("{0}")]
    Config(Problems),
    /// Something outside the configuration failed (engine, ports).
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

/// Everything a configuration names (certificates, compiled and type-checked
/// components, warming pools), loaded with no public port bound yet.
pub struct Prepared {
    engine: Arc<GuestEngine>,
    metrics: Arc<Metrics>,
    outbound: Arc<OutboundClient>,
    cache: Option<Arc<CompileCache>>,
    snapshot: Snapshot,
    acme: Arc<acme::AcmeState>,
    deployments: Arc<Deployments>,
}

impl Prepared {
    /// Loads what `config` names; every problem is reported at once.
    /// Nothing is written: versions and the audit trail stay in memory.
    pub async fn load(config: &Config) -> Result<Self, StartError> {
        let deployments = Arc::new(Deployments::new(
            VersionStore::open(None, config.deploy.keep_versions)
                .map_err(|reason| StartError::Runtime(anyhow::anyhow!(reason)))?,
            Audit::none(),
        ));
        Self::load_counted(config, new_metrics()?, deployments).await
    }

    /// Like [`Self::load`], counting compilations and loads in `metrics`,
    /// with versions and the audit trail where `[deploy]` says.
    async fn load_counted(
        config: &Config,
        metrics: Arc<Metrics>,
        deployments: Arc<Deployments>,
    ) -> Result<Self, StartError> {
        let engine = GuestEngine::new(config.gateway.max_instances.max(1), config.meters_fuel())
            .map_err(StartError::Runtime)?;
        let engine = Arc::new(engine);
        let cache = config.gateway.cache_dir.as_deref().and_then(|dir| {
            CompileCache::open(dir, engine.engine())
                .map(Arc::new)
                .inspect_err(|error| {
                    tracing::warn!(dir = %dir.display(), "compile cache disabled: {error}");
                })
                .ok()
        });
        let outbound = Arc::new(OutboundClient::new());
        let acme = Arc::new(acme::AcmeState::default());
        acme::load_stored(config, &acme, &metrics);
        let loader = live::Loader::new(
            &config.source,
            &engine,
            cache.as_ref(),
            &metrics,
            &outbound,
            &acme,
            &deployments,
        );
        let snapshot = live::build(&loader, config.clone())
            .await
            .map_err(StartError::Config)?;
        live::record_versions(&metrics, None, &snapshot);
        Ok(Self {
            engine,
            metrics,
            outbound,
            cache,
            snapshot,
            acme,
            deployments,
        })
    }

    /// How many handlers were loaded.
    pub fn handler_count(&self) -> usize {
        self.snapshot.handlers.len()
    }

    /// Binds `config`'s public listeners and hands the running gateway to
    /// the admin listener, if one is up.
    async fn bind(
        self,
        config: &Config,
        admin: Option<Admin>,
        mut inherited: Inherited,
    ) -> Result<Gateway, StartError> {
        let hub = Arc::new(crate::guest::pubsub::Hub::default());
        let cluster = match &config.cluster {
            Some(settings) => Some(
                Cluster::join(settings, &hub, &self.metrics)
                    .await
                    .map_err(|error| StartError::Runtime(anyhow::anyhow!(error)))?,
            ),
            None => None,
        };
        let listeners = listener::bind(&config.listeners, &mut inherited)
            .await
            .map_err(StartError::Runtime)?;
        let parts = Parts {
            hub,
            cluster,
            engine: self.engine,
            metrics: self.metrics,
            outbound: self.outbound,
            cache: self.cache,
            acme: self.acme,
            deployments: self.deployments,
        };
        let app = Arc::new(App::new(parts, config.gateway.clone(), self.snapshot));
        app.channels
            .sync(&app.hub, &app.metrics, app.live.load().components());
        app.residents.sync(&app.hub, app.live.load().components());
        let live_config = {
            let app = Arc::clone(&app);
            Box::new(move || Arc::clone(&app.live.load().config))
        };
        tokio::spawn(acme::run(acme::Manager {
            acme: Arc::clone(&app.acme),
            metrics: Arc::clone(&app.metrics),
            drain: app.drain.clone(),
            config: live_config,
        }));
        let reloader = Arc::new(Reloader::new(Arc::clone(&app), config.source.clone()));
        let controller = Controller::start(Arc::clone(&app), Arc::clone(&reloader));
        crate::control::cluster_sync::start(&app, &controller);
        if let Some(admin) = &admin {
            admin
                .state
                .started(Arc::clone(&app), Arc::clone(&reloader), controller);
        }
        let handed_over = Arc::new(AtomicBool::new(false));
        if let Some(path) = &config.gateway.handover_socket {
            let offered = listeners
                .iter()
                .map(Bound::offer)
                .chain(admin.iter().map(Admin::offer))
                .collect::<std::io::Result<Vec<_>>>();
            let offering = offered.and_then(|sockets| {
                handover::offer(path, sockets, app.drain.clone(), Arc::clone(&handed_over))
            });
            if let Err(error) = offering {
                tracing::warn!(
                    path = %path.display(),
                    "no handover socket (a restart will rebind the ports): {error}"
                );
            }
        }
        // Armed before the gateway reports its listeners, so no change made
        // after that can be missed.
        let watcher = if config.gateway.watch {
            let dir = &config.gateway.handlers_dir;
            let mut files = certificate_files(config);
            // A change to an included config file reloads like one to the main file.
            files.extend(config.includes.iter().cloned());
            reload::watch(Arc::clone(&reloader), dir, &files)
                .inspect_err(|error| {
                    tracing::warn!(
                        dir = %dir.display(),
                        "not watching for changes (SIGHUP still reloads): {error}"
                    );
                })
                .ok()
        } else {
            None
        };
        Ok(Gateway {
            app,
            listeners,
            admin,
            handed_over,
            reloader,
            _watcher: watcher,
        })
    }
}

/// The sockets of the gateway answering at `path`, if one does; a failed
/// handover is logged and the ports are bound anew.
async fn inherit(path: &std::path::Path) -> Inherited {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || Inherited::receive(&path)).await {
        Ok(Ok(inherited)) => {
            if !inherited.is_empty() {
                tracing::info!(
                    sockets = inherited.len(),
                    "took over the listening sockets of the running gateway"
                );
            }
            inherited
        }
        Ok(Err(error)) => {
            tracing::warn!(path = %shown, "handover failed, binding afresh: {error}");
            Inherited::default()
        }
        Err(join) => {
            tracing::warn!(path = %shown, "handover failed, binding afresh: {join}");
            Inherited::default()
        }
    }
}

fn new_metrics() -> Result<Arc<Metrics>, StartError> {
    Metrics::new(prometheus::Registry::new())
        .map(Arc::new)
        .context("registering metrics")
        .map_err(StartError::Runtime)
}

/// The admin listener, serving from before the components load; stops
/// with its owner.
struct Admin {
    state: Arc<admin::AdminState>,
    task: tokio::task::JoinHandle<()>,
    /// The listening socket, kept to offer to a successor.
    socket: (SocketKey, std::os::fd::OwnedFd),
}

impl Admin {
    fn offer(&self) -> std::io::Result<(SocketKey, std::os::fd::OwnedFd)> {
        Ok((self.socket.0.clone(), self.socket.1.try_clone()?))
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every file a configuration names exists (components, certificates): the
/// cheap part of the file checks, done before the admin port is bound so
/// that a mistyped path binds nothing at all.
fn files_exist(config: &Config) -> bool {
    let handlers = config.handlers.values().map(|handler| handler.path.clone());
    let acme_ca = config
        .acme
        .iter()
        .filter_map(|acme| acme.directory_ca.clone());
    handlers
        .chain(certificate_files(config))
        .chain(acme_ca)
        .chain(config.admin_token.clone())
        .all(|path| std::fs::metadata(path).is_ok_and(|meta| !meta.is_dir()))
}

/// Every certificate and key file of every TLS listener.
fn certificate_files(config: &Config) -> Vec<std::path::PathBuf> {
    config
        .listeners
        .iter()
        .filter_map(|listener| listener.tls.as_ref())
        .flat_map(|tls| {
            let sites = tls.sni.iter().map(|site| (&site.cert, &site.key));
            let default = tls.default.iter().map(|pair| (&pair.cert, &pair.key));
            default.chain(sites)
        })
        .flat_map(|(cert, key)| [cert.clone(), key.clone()])
        .collect()
}

/// The problems with the files `config` names (components, certificates),
/// so that a configuration that is already known to be invalid can still be
/// reported on in full, in one go.
pub async fn file_problems(config: &Config) -> Vec<Problem> {
    match Prepared::load(config).await {
        Err(StartError::Config(problems)) => problems.0,
        Ok(_) | Err(StartError::Runtime(_)) => Vec::new(),
    }
}

/// The version store and audit log `[deploy]` names, opened (and created).
fn deployments(config: &Config, metrics: &Metrics) -> Result<Arc<Deployments>, StartError> {
    let mut problems = ProblemList::new(&config.source);
    let store = VersionStore::open(
        config.deploy.state_dir.as_deref(),
        config.deploy.keep_versions,
    )
    .inspect_err(|reason| problems.push("deploy.state_dir", reason.clone()));
    let audit = Audit::open(
        config.deploy.audit_log.as_deref(),
        metrics.audit_write_failures.clone(),
    )
    .inspect_err(|reason| problems.push("deploy.audit_log", reason.clone()));
    match (store, audit) {
        (Ok(store), Ok(audit)) => Ok(Arc::new(Deployments::new(store, audit))),
        _ => Err(StartError::Config(Problems(problems.into_problems()))),
    }
}

/// Names a file start-up reads to its end after the admin listener is up
/// and before any component loads: the end-to-end tests point it at a FIFO
/// to hold "starting" for exactly as long as they need (a slow disk or a
/// large component, made deterministic). Unset, it costs nothing.
const LOAD_GATE: &str = "WASMGATE_TEST_LOAD_GATE";

/// A gateway whose components are loaded and whose ports are bound, ready to serve.
pub struct Gateway {
    app: Arc<App>,
    listeners: Vec<Bound>,
    admin: Option<Admin>,
    /// A successor process has the listening sockets.
    handed_over: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Gateway {
    /// Starts what `config` says: the admin listener first (its address goes
    /// to `admin_bound`, and it answers "starting" from then on), then every
    /// component and certificate is loaded, and only then are the public
    /// listeners bound, so a bad component or certificate takes no public
    /// port. A file that does not exist at all is found before any port is
    /// bound.
    pub async fn start(
        config: &Config,
        admin_bound: impl FnOnce(SocketAddr),
    ) -> Result<Self, StartError> {
        Self::start_with(config, admin_bound, Activated::default()).await
    }

    /// Like [`Self::start`], listening on the sockets systemd passed
    /// (matched by address) rather than binding or taking them over.
    pub async fn start_with(
        config: &Config,
        admin_bound: impl FnOnce(SocketAddr),
        activated: Activated,
    ) -> Result<Self, StartError> {
        if !files_exist(config) {
            return Err(match Prepared::load(config).await {
                Err(error) => error,
                // Appeared since: report it as a race rather than start half-checked.
                Ok(_) => StartError::Runtime(anyhow::anyhow!(
                    "configured files changed while starting; try again"
                )),
            });
        }
        let metrics = new_metrics()?;
        let mut inherited = if !activated.is_empty() {
            activated.into_inherited(config)
        } else if let Some(path) = &config.gateway.handover_socket {
            inherit(path).await
        } else {
            Inherited::default()
        };
        let admin = match config.admin {
            Some(addr) => {
                let key = SocketKey::admin(addr);
                let socket = match inherited.take(&key) {
                    Some(socket) => socket,
                    None => tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding the admin listener on {addr}"))
                        .map_err(StartError::Runtime)?,
                };
                if let Ok(bound) = socket.local_addr() {
                    admin_bound(bound);
                }
                let kept = std::os::fd::AsFd::as_fd(&socket)
                    .try_clone_to_owned()
                    .context("duplicating the admin socket")
                    .map_err(StartError::Runtime)?;
                let state = Arc::new(admin::AdminState::new(
                    Arc::clone(&metrics),
                    config.admin_token.clone(),
                ));
                let task = tokio::spawn(admin::serve(socket, Arc::clone(&state)));
                Some(Admin {
                    state,
                    task,
                    socket: (key, kept),
                })
            }
            None => None,
        };
        if let Some(gate) = std::env::var_os(LOAD_GATE) {
            // Off the runtime: the read waits for the test's writer.
            let _ = tokio::task::spawn_blocking(move || std::fs::read(gate)).await;
        }
        let deployments = deployments(config, &metrics)?;
        Prepared::load_counted(config, metrics, deployments)
            .await?
            .bind(config, admin, inherited)
            .await
    }

    /// Bound listeners as (scheme, address), in config order.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listeners
            .iter()
            .map(|bound| (bound.scheme(), bound.addr))
            .collect()
    }

    /// What reloads this gateway (for SIGHUP and the like).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// Serves until `shutdown` resolves, then drains within the grace period;
    /// reloads on file changes (when the config says `watch`) from the moment
    /// it is bound. Returns how many
    /// connections were still open when the grace period ran out (0 after a
    /// clean drain).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> usize {
        for bound in self.listeners {
            tokio::spawn(listener::accept_loop(Arc::clone(&self.app), bound));
        }
        shutdown.await;
        let grace = self.app.settings.grace_period;
        // Started before it is announced: whoever reads the line (an
        // operator, a test) finds the gateway already refusing reloads.
        self.app.drain.start();
        tracing::info!(
            "draining: no new connections; in-flight requests have {}",
            humantime::format_duration(grace)
        );
        // The successor answers the admin port now; this process saying
        // "draining" there would only make health checks flap.
        let admin = if self.handed_over.load(Ordering::Acquire) {
            None
        } else {
            self.admin
        };
        let abandoned = self.app.drain.wait(grace).await;
        // Residents serve the requests that were in flight: stopped last.
        self.app.residents.stop_all().await;
        drop(admin);
        abandoned
    }
}

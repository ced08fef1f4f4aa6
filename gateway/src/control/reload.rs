//! Reloading: file changes, SIGHUP and the like all end in [`Reloader::reload`],
//! which rebuilds the snapshot off the request path and publishes it with one
//! atomic store.
//!
//! Invariant: the watcher only produces events; it never touches live state.
//! A reload either publishes a complete next generation or keeps the running
//! one (an invalid configuration changes nothing); reloads never overlap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{Mutex, mpsc};

use crate::app::App;
use crate::config::Config;
use crate::control::live::{self, Loader};
use crate::deploy::{Arrival, Entry};

/// Quiet time after the last file event before reloading. Only complete
/// files raise events (see [`is_complete_change`]), so this only has to
/// coalesce the bursts of one save (an editor renaming a backup aside, then
/// closing the new file), which take well under a millisecond; it adds
/// directly to every swap's latency.
const DEBOUNCE: Duration = Duration::from_millis(2);

/// Rebuilds and publishes snapshots, one at a time.
pub struct Reloader {
    app: Arc<App>,
    config_path: PathBuf,
    running: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new generation is live (possibly with handlers kept at their
    /// previous version; those were logged).
    Published(u64),
    /// The configuration is invalid, or the next generation could not be
    /// built whole (every problem listed); the running generation stays.
    Rejected(Vec<String>),
    /// The gateway is draining: nothing is loaded any more.
    Draining,
}

impl Reloader {
    /// A reloader for the gateway in `app`, reading `config_path`.
    pub fn new(app: Arc<App>, config_path: PathBuf) -> Self {
        Self {
            app,
            config_path,
            running: Mutex::new(()),
        }
    }

    /// [`Self::reload`] on a task of its own, so that a bug that panics
    /// fails one reload and not the loop (watcher, signal handler) that asked.
    pub async fn reload_contained(self: &Arc<Self>, cause: &'static str) {
        let reloader = Arc::clone(self);
        if let Err(panic) = tokio::spawn(async move { reloader.reload(cause).await }).await {
            tracing::error!(%cause, "reload failed: {panic}");
        }
    }

    /// Re-reads the configuration and every component, then publishes the
    /// result. `cause` names what asked for it, for the log and the audit trail.
    pub async fn reload(&self, cause: &str) -> Outcome {
        let _one_at_a_time = self.running.lock().await;
        if self.app.drain.is_draining() {
            tracing::warn!(%cause, "reload refused: the gateway is draining");
            return Outcome::Draining;
        }
        tracing::info!(%cause, "reloading");
        let outcome = match Config::load(&self.config_path) {
            Ok(config) => self.publish(config, cause).await,
            Err(invalid) => {
                for problem in &invalid.problems.0 {
                    tracing::error!(%cause, "reload rejected: {problem}");
                }
                Outcome::Rejected(invalid.problems.0.iter().map(ToString::to_string).collect())
            }
        };
        let entry = Entry::new("config_reloaded", cause);
        self.app.deployments.audit.record(match &outcome {
            Outcome::Published(generation) => entry
                .with("outcome", "published")
                .with("generation", *generation),
            Outcome::Rejected(problems) => entry
                .with("outcome", "rejected")
                .with("reason", problems.join("; ")),
            Outcome::Draining => entry.with("outcome", "draining"),
        });
        outcome
    }

    /// Rebuilds from the configuration already live (not the file, which
    /// may be half-edited): what a rollout step publishes after changing a
    /// handler's versions or weights. Unchanged versions are carried over.
    pub async fn republish(&self, cause: &str) -> Outcome {
        let _one_at_a_time = self.running.lock().await;
        if self.app.drain.is_draining() {
            return Outcome::Draining;
        }
        let config = Config::clone(&self.app.live.load().config);
        self.publish(config, cause).await
    }

    /// Builds the generation after the live one from `config` and publishes it.
    async fn publish(&self, mut config: Config, cause: &str) -> Outcome {
        if config.meters_fuel() && !self.app.engine.meters_fuel() {
            let problem = format!(
                "{}: limits.fuel: CPU budgets need fuel metering, which is chosen when wasmgate starts; restart it to apply them",
                config.source.display()
            );
            tracing::error!(%cause, "reload rejected: {problem}");
            return Outcome::Rejected(vec![problem]);
        }
        let previous = self.app.live.load_full();
        keep_running_listeners(&mut config, &previous.config);
        keep_running_cluster(&mut config, &previous.config);
        let app = &self.app;
        let loader = Loader::new(
            &config.source,
            &app.engine,
            app.cache.as_ref(),
            &app.metrics,
            &app.outbound,
            &app.acme,
            &app.deployments,
        )
        .acting_for(cause);
        let rebuilt = match live::rebuild(&loader, config, &previous).await {
            Ok(rebuilt) => rebuilt,
            Err(problems) => {
                for problem in &problems {
                    tracing::error!(%cause, "reload rejected: {problem}");
                }
                return Outcome::Rejected(problems.iter().map(ToString::to_string).collect());
            }
        };
        for problem in &rebuilt.problems {
            tracing::error!(%cause, "{problem}");
        }
        let generation = rebuilt.snapshot.generation;
        let next = Arc::new(rebuilt.snapshot);
        self.app.live.store(Arc::clone(&next));
        self.app
            .channels
            .sync(&self.app.hub, &self.app.metrics, next.components());
        self.app.residents.sync(&self.app.hub, next.components());
        live::record_versions(&self.app.metrics, Some(&previous), &next);
        // New names, a new CA, or an operator asking to retry a failed order.
        self.app.acme.wake();
        for (handler, sha256) in rebuilt.arrivals {
            self.app.deployments.announce(Arrival {
                handler,
                sha256,
                actor: cause.to_string(),
            });
        }
        let counts = rebuilt.counts;
        tracing::info!(
            %cause,
            generation,
            compiled = counts.compiled,
            from_cache = counts.cached,
            unchanged = counts.carried,
            kept_previous = counts.kept,
            "generation published"
        );
        Outcome::Published(generation)
    }
}

/// Listening sockets are bound once: a reload keeps the running listeners
/// (and reloads their certificates), and says so when the file asks for others.
fn keep_running_listeners(config: &mut Config, running: &Config) {
    let addresses = |config: &Config| config.listeners.iter().map(|l| l.addr).collect::<Vec<_>>();
    if addresses(config) != addresses(running) {
        tracing::warn!(
            "the listeners changed in {}: listener changes take effect after a restart",
            config.source.display()
        );
        config.listeners.clone_from(&running.listeners);
    }
}

/// A node joins its cluster once: a reload keeps the running `[cluster]`,
/// and says so when the file asks for another.
fn keep_running_cluster(config: &mut Config, running: &Config) {
    if config.cluster != running.cluster {
        tracing::warn!(
            "[cluster] changed in {}: a node joins or leaves a cluster by restart",
            config.source.display()
        );
        config.cluster.clone_from(&running.cluster);
    }
}

/// Watches the handlers directory, the config file and `files` (the
/// certificates and keys it names); reloads after each burst of changes. The
/// watcher stops when the returned value is dropped.
pub fn watch(
    reloader: Arc<Reloader>,
    handlers_dir: &Path,
    files: &[PathBuf],
) -> notify::Result<RecommendedWatcher> {
    let config_file = reloader.config_path.canonicalize()?;
    let handlers_dir = handlers_dir.canonicalize()?;
    // Files by their directory's real path and their own name: certificate
    // tools replace files and symlinks (certbot's live/ directory), so a
    // watched file's own target may be a different inode after every renewal.
    let mut watched: Vec<PathBuf> = vec![config_file];
    for file in files {
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        watched.push(dir.canonicalize()?.join(name));
    }
    let (changes, mut changed) = mpsc::unbounded_channel();
    let mut watcher = {
        let handlers_dir = handlers_dir.clone();
        let watched = watched.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_complete_change(&event.kind) => {
                let relevant = event.paths.iter().any(|path| {
                    watched.contains(path)
                        || (path.parent() == Some(&handlers_dir)
                            && path
                                .extension()
                                .is_some_and(|extension| extension == "wasm"))
                });
                if relevant {
                    let _ = changes.send(());
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("file watcher: {error}"),
        })?
    };
    watcher.watch(&handlers_dir, RecursiveMode::NonRecursive)?;
    let mut dirs: Vec<&Path> = watched.iter().filter_map(|file| file.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs.into_iter().filter(|dir| *dir != handlers_dir) {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, changed.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            reloader.reload_contained("file change").await;
        }
    });
    Ok(watcher)
}

/// Events that mean a file is complete: closed after writing (`cp`), renamed
/// into place (`mv`, atomic installers) or removed. Plain writes are not: a
/// file still being written is never loaded.
fn is_complete_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

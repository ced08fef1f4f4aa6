//! The live state a request is served from, built and published as one value.
//!
//! Invariant: a [`Snapshot`] is complete before anyone sees it (every
//! component compiled and type-checked, every certificate loaded), and a
//! request loads it once and is served entirely by that generation.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::config::{Config, HandlerConfig, HandlerName, ProblemList, Problems};
use crate::guest::{self, GuestEngine, Handler};
use crate::router::Router;
use crate::tls::{self, TlsFile};

/// Everything a request needs, for one generation of the configuration.
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    /// Host and path → route.
    pub router: Router,
    /// Loaded handlers by name.
    pub handlers: HashMap<HandlerName, Arc<Handler>>,
    /// TLS configuration per listener (by config index); `None` for plain listeners.
    pub tls: Vec<Option<Arc<ServerConfig>>>,
}

/// The published snapshot.
pub type Live = ArcSwap<Snapshot>;

impl Snapshot {
    /// The handler called `name`, if loaded.
    pub fn handler(&self, name: &HandlerName) -> Option<&Arc<Handler>> {
        self.handlers.get(name)
    }
}

/// Builds generation `generation` of the snapshot for `config`: loads every
/// certificate and compiles every component (off the async workers), and
/// reports every problem at once. Needs a tokio runtime (pools prewarm on it).
pub async fn build(
    engine: &Arc<GuestEngine>,
    config: &Config,
    generation: u64,
) -> Result<Snapshot, Problems> {
    let mut problems = ProblemList::new(&config.source);
    let router = Router::build(&config.routes).map_err(|conflict| conflict.to_string());
    if let Err(reason) = &router {
        problems.push("route", reason.clone());
    }
    let tls = config
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let files = listener.tls.as_ref()?;
            match tls::server_config(files) {
                Ok(server) => Some(server),
                Err(found) => {
                    for problem in found {
                        let file = match problem.file {
                            TlsFile::Cert => "cert",
                            TlsFile::Key => "key",
                        };
                        problems.push(format!("listener[{index}].tls.{file}"), problem.reason);
                    }
                    None
                }
            }
        })
        .collect();
    let loads = match load_components(engine, config).await {
        Ok(loads) => loads,
        Err(join) => {
            problems.push("handler", format!("loading the components failed: {join}"));
            Vec::new()
        }
    };
    let mut handlers = HashMap::new();
    for (name, handler, loaded) in loads {
        match loaded {
            Ok(loaded) => {
                handlers.insert(
                    name.clone(),
                    Arc::new(Handler::new(&name, &handler, loaded)),
                );
            }
            Err(error) => problems.push(
                format!("handler.{name}.path"),
                format!("{}: {error}", handler.path.display()),
            ),
        }
    }
    let router = router.unwrap_or_default();
    problems.finish(Snapshot {
        generation,
        router,
        handlers,
        tls,
    })
}

type LoadResult = (
    HandlerName,
    HandlerConfig,
    Result<guest::Loaded, guest::LoadError>,
);

/// Compiles every handler's component on a blocking thread (compilation is
/// CPU-bound and would stall an async worker).
async fn load_components(
    engine: &Arc<GuestEngine>,
    config: &Config,
) -> Result<Vec<LoadResult>, tokio::task::JoinError> {
    let engine = Arc::clone(engine);
    let wanted: Vec<_> = config
        .handlers
        .iter()
        .map(|(name, handler)| (name.clone(), handler.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(name, handler)| {
                let loaded = guest::component::load(&engine, &handler.path);
                if let Ok(loaded) = &loaded {
                    tracing::info!(
                        handler = name.as_str(),
                        path = %handler.path.display(),
                        compile_ms = loaded.compile_time.as_millis() as u64,
                        "component loaded"
                    );
                }
                (name, handler, loaded)
            })
            .collect()
    })
    .await
}

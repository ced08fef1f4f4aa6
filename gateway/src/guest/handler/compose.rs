//! A handler's composition: wiring its imports to the components serving
//! in its generation (again when one of them changes), and direct calls
//! into a `[component]`'s functions (invocation routes, channel messages).
//!
//! Invariant: a handler is wired only to components started in its own
//! generation; a direct call runs under the component's own concurrency
//! and time limits, and ends by its deadline whatever the guest does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::component::{LoadError, Loaded, Origin, Pre, Unlinked, typed};
use super::super::host::{DeadlineExceeded, Host, is_out_of_fuel};
use super::super::wire::{self, Arguments, InvokeError, Library};
use super::{Handler, Kind, Services, lookup_env, trap_summary};
use crate::config::{HandlerConfig, HandlerName, HandlerWorld};
use crate::http::error::GatewayError;

/// A component after wiring: a typed pre-instance, or a `[component]`'s
/// linked pre-instance with its compiled form and its interceptors.
pub(super) enum Linked {
    Pre(Pre),
    Component(
        wasmtime::component::InstancePre<Host>,
        wasmtime::component::Component,
        Vec<Arc<Library>>,
    ),
}

/// Its `config.*` values, each `${process:env:NAME|default}` resolved
/// (the process environment, then the `.env` file, then the default).
pub(super) fn config_values(
    config: &HandlerConfig,
    dotenv: &HashMap<String, String>,
) -> Result<wasmtime_wasi_config::WasiConfigVariables, LoadError> {
    config
        .config
        .iter()
        .map(|(key, value)| {
            value
                .resolve(|variable| lookup_env(variable, dotenv))
                .map(|resolved| (key.clone(), resolved))
                .map_err(|missing| {
                    LoadError::Config(format!(
                        "config.{key} needs the environment variable {}, which is set neither in the process nor in .env, and gives no default (write ${{process:env:{}|default}})",
                        missing.0, missing.0
                    ))
                })
        })
        .collect()
}

/// Every `files` directory exists, so no store is made with a grant missing.
pub(super) fn check_files(config: &HandlerConfig) -> Result<(), LoadError> {
    match config
        .files
        .iter()
        .find(|grant| !std::fs::metadata(&grant.dir).is_ok_and(|meta| meta.is_dir()))
    {
        Some(grant) => Err(LoadError::Files(format!(
            "files: {} (mapped at {}) is not a directory",
            grant.dir.display(),
            grant.at
        ))),
        None => Ok(()),
    }
}

/// The components a handler was wired to, by name.
pub(super) type WiredTo = Vec<(HandlerName, Arc<Handler>)>;

/// Links `unlinked` with its imports wired to the components `config`
/// names, as started in `services.components`.
pub(super) fn wire_up(
    config: &HandlerConfig,
    unlinked: &Unlinked,
    services: &Services<'_>,
) -> Result<(Linked, WiredTo), LoadError> {
    let mut wired_to = Vec::new();
    let mut libraries =
        |names: &[HandlerName], role: &str| -> Result<Vec<Arc<Library>>, LoadError> {
            names
                .iter()
                .map(|dependency| {
                    let handler = services.components.get(dependency).ok_or_else(|| {
                        LoadError::Wiring(format!(
                            "{role} `{dependency}` is not loaded (see its own error)"
                        ))
                    })?;
                    let library = handler.library().ok_or_else(|| {
                        LoadError::Wiring(format!("{role} `{dependency}` is not a [component]"))
                    })?;
                    wired_to.push((dependency.clone(), Arc::clone(handler)));
                    Ok(Arc::clone(library))
                })
                .collect()
        };
    let imports = libraries(&config.imports, "import")?;
    let advice = libraries(&config.interceptors, "interceptor")?;
    let engine = services.engine.engine();
    let mut linker = services.engine.linker().clone();
    wire::link(
        engine,
        &mut linker,
        &unlinked.component,
        &unlinked.foreign,
        &imports,
    )?;
    let instance_pre = linker
        .instantiate_pre(&unlinked.component)
        .map_err(|error| LoadError::Link(format!("{error:#}")))?;
    let linked = match config.world {
        HandlerWorld::Component => {
            Linked::Component(instance_pre, unlinked.component.clone(), advice)
        }
        // The config allows interceptors on components only.
        world => Linked::Pre(typed(world, instance_pre)?),
    };
    Ok((linked, wired_to))
}

impl Handler {
    /// Whether every component it was wired to is still the one serving in
    /// `components` (if not, [`Self::rewire`] makes the version that is).
    pub fn wired_to_current(&self, components: &HashMap<HandlerName, Arc<Handler>>) -> bool {
        self.wired_to.iter().all(|(name, wired)| {
            components
                .get(name)
                .is_some_and(|current| Arc::ptr_eq(current, wired))
        })
    }

    /// The same version wired to the components serving now: a new handler
    /// (its own pool), from the compiled component it kept.
    pub async fn rewire(
        &self,
        name: &HandlerName,
        services: &Services<'_>,
    ) -> Result<Self, LoadError> {
        let Some(unlinked) = self.unlinked.clone() else {
            return Err(LoadError::Wiring("nothing to wire".into()));
        };
        let loaded = Loaded {
            pre: Pre::Unlinked(unlinked),
            hash: self.hash.clone(),
            origin: Origin::Cache,
            load_time: Duration::ZERO,
        };
        Self::start(name, &self.config, loaded, services, Some(self)).await
    }

    /// Calls `function` of this `[component]` directly (an invocation route,
    /// a channel message): a fresh instance, its interceptors around the
    /// call, the component's own concurrency and time limits.
    pub async fn invoke(
        &self,
        function: &str,
        arguments: Arguments,
    ) -> Result<String, GatewayError> {
        let Some(library) = self.library() else {
            return Err(GatewayError::Internal(format!(
                "{} is not a component",
                self.label
            )));
        };
        let _permit = self.permit().await?;
        let timeout = self.config.limits.timeout;
        let deadline = Instant::now() + timeout;
        let called = tokio::time::timeout_at(
            deadline.into(),
            library.invoke(function, arguments, deadline),
        )
        .await;
        match called {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(InvokeError::NoSuchFunction { .. })) => Err(GatewayError::NoRoute),
            Ok(Err(InvokeError::Argument(reason))) => Err(GatewayError::BadRequest(reason)),
            Ok(Err(InvokeError::Failed(error))) if error.is::<DeadlineExceeded>() => {
                Err(GatewayError::GuestTimeout(timeout))
            }
            Ok(Err(InvokeError::Failed(error))) if is_out_of_fuel(&error) => {
                self.metrics.out_of_fuel.inc();
                Err(GatewayError::GuestOutOfFuel(
                    self.config.limits.fuel.unwrap_or(u64::MAX),
                ))
            }
            Ok(Err(InvokeError::Failed(error))) => {
                let summary = trap_summary(&error);
                tracing::warn!(
                    component = &*self.label,
                    function,
                    "invocation failed: {summary}"
                );
                Err(GatewayError::GuestTrap(summary))
            }
            Err(_elapsed) => Err(GatewayError::GuestTimeout(timeout)),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    /// The component's runtime, if this is a `[component]`.
    pub fn library(&self) -> Option<&Arc<Library>> {
        match &self.kind {
            Kind::Component(library) => Some(library),
            _ => None,
        }
    }
}

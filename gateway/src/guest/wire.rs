//! Components wired to each other through the host: an import of one
//! component (`imports = ["translator"]`) is served by another component's
//! export, each in its own store, with interceptors' advice around the call.
//!
//! Why through the `Linker` and not by composing bytes (`wac-graph`): each
//! component keeps its own store, so its own capabilities, configuration
//! values, memory cap and log lines, which a composed component would share
//! with everything composed into it; interceptors can see every call's
//! function, arguments and result whatever the interface; and a new version
//! of a dependency is a new link, made when its dependents are rebuilt in the
//! same generation, with no bytes rewritten. The cost is one dynamic call
//! (values copied between the two stores) per wired call, measured in
//! `loadtests/`; resources, streams and futures cannot cross, so an
//! interface carrying them is refused at load.
//!
//! Invariant: a wired import is type-checked against the export it is wired
//! to at load; the importing instance gets one instance of each dependency
//! (made at its first call, dropped with it, never reused after a failure);
//! a dependency's calls run under the importer's deadline.

mod shared;

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};
use wasmtime::{Engine, StoreContextMut};

use super::bindings::InterceptorPre;
use super::bindings::advice::{Argument, Call};
use super::component::LoadError;
use super::host::{Host, INSTANTIATE_LIMIT, Linked, StoreMaker, refuel};
use super::render::{render, render_all};
use super::supervision::Supervision;
use crate::control::metrics::{ComponentCalls, ResidentMetrics};
pub use shared::Shared;

/// A `[component]` ready to serve its exports to the components that import
/// it.
pub struct Library {
    name: Arc<str>,
    component: Component,
    pre: InstancePre<Host>,
    stores: StoreMaker,
    /// Its interceptors, in order.
    advice: Vec<Arc<Advice>>,
    /// Counts its calls by outcome.
    calls: ComponentCalls,
    /// Its exported functions by name (the first interface that exports a
    /// name wins), for invocation routes and channel subscriptions.
    functions: HashMap<String, Export>,
    /// How it lives, if it is resident.
    residence: Option<Residence>,
}

/// How a resident component lives.
pub enum Residence {
    /// It exports `wasi:cli/run`: one long run at a time, supervised by
    /// [`super::resident`]; it serves no calls (its instance is busy running).
    Program {
        /// Its run export, ready to instantiate.
        command: wasmtime_wasi::p2::bindings::CommandPre<Host>,
        /// Its supervision record.
        supervision: Arc<Supervision>,
    },
    /// It serves calls on one shared instance.
    Service(Arc<Shared>),
}

impl Residence {
    /// Its supervision record.
    pub fn supervision(&self) -> &Arc<Supervision> {
        match self {
            Self::Program { supervision, .. } => supervision,
            Self::Service(shared) => &shared.supervision,
        }
    }
}

/// One exported function.
struct Export {
    interface: Arc<str>,
    function: Arc<str>,
    index: ComponentExportIndex,
    ty: ComponentFunc,
}

/// The arguments of a direct invocation.
pub enum Arguments {
    /// By parameter name (an invocation route's path segments).
    Named(Vec<(String, String)>),
    /// The one parameter's value (a channel message).
    Single(String),
}

/// Why a direct invocation did not return.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The component exports no function of that name.
    #[error("`{component}` exports no function `{function}`")]
    NoSuchFunction {
        /// The component.
        component: String,
        /// The function asked for.
        function: String,
    },
    /// An argument is missing or does not parse as its parameter's type.
    #[error("{0}")]
    Argument(String),
    /// The call (or an interceptor) trapped, was refused or ran past its deadline.
    #[error(transparent)]
    Failed(wasmtime::Error),
}

/// An interceptor's advice, ready to be instantiated next to what it wraps.
pub struct Advice {
    name: Arc<str>,
    pre: InterceptorPre<Host>,
    stores: StoreMaker,
}

impl Library {
    /// A component's runtime; `advice` are its interceptors' libraries;
    /// `resident` its supervision policy, if it is resident.
    pub(super) fn new(
        name: Arc<str>,
        component: Component,
        pre: InstancePre<Host>,
        stores: StoreMaker,
        advice: &[Arc<Library>],
        calls: ComponentCalls,
        resident: Option<(crate::config::Resident, ResidentMetrics)>,
    ) -> Result<Self, LoadError> {
        let advice = advice
            .iter()
            .map(|library| {
                let pre = InterceptorPre::new(library.pre.clone()).map_err(|error| {
                    LoadError::Wiring(format!(
                        "interceptor `{}` does not export wasmgate:interceptor/advice@0.1.0: {error:#}",
                        library.name
                    ))
                })?;
                Ok(Arc::new(Advice {
                    name: Arc::clone(&library.name),
                    pre,
                    stores: library.stores.clone(),
                }))
            })
            .collect::<Result<_, LoadError>>()?;
        let functions = exported_functions(&component);
        let residence = resident.map(|(policy, metrics)| {
            let supervision = Arc::new(Supervision::new(Arc::clone(&name), policy, metrics));
            match wasmtime_wasi::p2::bindings::CommandPre::new(pre.clone()) {
                Ok(command) => Residence::Program {
                    command,
                    supervision,
                },
                Err(_) => Residence::Service(Arc::new(Shared::new(supervision, stores.fuel))),
            }
        });
        Ok(Self {
            name,
            component,
            pre,
            stores,
            advice,
            calls,
            functions,
            residence,
        })
    }

    /// How it lives, if it is resident.
    pub fn residence(&self) -> Option<&Residence> {
        self.residence.as_ref()
    }

    /// What its stores are made from.
    pub(super) fn stores(&self) -> &StoreMaker {
        &self.stores
    }

    /// Its engine.
    pub(super) fn engine(&self) -> &Engine {
        self.component.engine()
    }

    /// The name of its one exported function that takes one string, if it
    /// has exactly one (what a subscription calls by default).
    pub fn single_string_function(&self) -> Option<&str> {
        let mut candidates = self.functions.values().filter(|export| {
            let params: Vec<Type> = export.ty.params().map(|(_, ty)| ty).collect();
            matches!(params.as_slice(), [Type::String])
        });
        let first = candidates.next()?;
        candidates.next().is_none().then_some(&*first.function)
    }

    /// Whether it exports a function called `function`.
    pub fn exports_function(&self, function: &str) -> bool {
        self.functions.contains_key(function)
    }

    /// Calls `function` on a fresh instance (its interceptors around it),
    /// under `deadline`; returns its result as text (a lone string as is).
    pub async fn invoke(
        &self,
        function: &str,
        arguments: Arguments,
        deadline: std::time::Instant,
    ) -> Result<String, InvokeError> {
        let export = self
            .functions
            .get(function)
            .ok_or_else(|| InvokeError::NoSuchFunction {
                component: self.name.to_string(),
                function: function.to_string(),
            })?;
        let params: Vec<(String, Type)> = export
            .ty
            .params()
            .map(|(name, ty)| (name.to_string(), ty))
            .collect();
        let values = match arguments {
            Arguments::Single(text) => match params.as_slice() {
                [(_, ty)] => vec![parse_argument(ty, &text).map_err(InvokeError::Argument)?],
                _ => {
                    return Err(InvokeError::Argument(format!(
                        "`{function}` takes {} parameters, not one",
                        params.len()
                    )));
                }
            },
            Arguments::Named(named) => params
                .iter()
                .map(|(name, ty)| {
                    let text = named
                        .iter()
                        .find(|(given, _)| given == name)
                        .map(|(_, text)| text)
                        .ok_or_else(|| InvokeError::Argument(format!("no value for `{name}`")))?;
                    parse_argument(ty, text)
                        .map_err(|reason| InvokeError::Argument(format!("`{name}`: {reason}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut results = vec![Val::Bool(false); export.ty.results().len()];
        let outcome = match &self.residence {
            Some(Residence::Service(shared)) => {
                shared
                    .call(self, export, &values, &mut results, deadline)
                    .await
            }
            _ => match self.instantiate(deadline).await {
                Ok(mut linked) => {
                    self.call_export(&mut linked, export, &values, &mut results)
                        .await
                }
                Err(error) => return Err(InvokeError::Failed(error)),
            },
        };
        self.count(&outcome);
        outcome.map_err(InvokeError::Failed)?;
        Ok(match results.as_slice() {
            [Val::String(text)] => text.clone(),
            _ => render_all(&results),
        })
    }

    fn count(&self, outcome: &wasmtime::Result<()>) {
        match outcome {
            Ok(()) => self.calls.ok.inc(),
            Err(error) if error.is::<Refused>() => self.calls.refused.inc(),
            Err(_) => self.calls.failed.inc(),
        }
    }

    /// Calls `export` in `linked` with its interceptors' advice around it.
    async fn call_export(
        &self,
        linked: &mut Linked,
        export: &Export,
        params: &[Val],
        results: &mut [Val],
    ) -> wasmtime::Result<()> {
        let call = (!linked.advice.is_empty()).then(|| Call {
            component: self.name.to_string(),
            interface_name: export.interface.to_string(),
            function: export.function.to_string(),
            arguments: export
                .ty
                .params()
                .zip(params)
                .map(|((name, _), value)| Argument {
                    name: name.to_string(),
                    value: render(value),
                })
                .collect(),
        });
        if let Some(call) = &call {
            for ((store, interceptor), advice) in linked.advice.iter_mut().zip(&self.advice) {
                if let Err(reason) = interceptor
                    .wasmgate_interceptor_advice()
                    .call_before(&mut *store, call)
                    .await?
                {
                    return Err(Refused {
                        interceptor: Arc::clone(&advice.name),
                        component: Arc::clone(&self.name),
                        function: Arc::clone(&export.function),
                        reason,
                    }
                    .into());
                }
            }
        }
        let func = linked
            .instance
            .get_func(&mut linked.store, export.index)
            .ok_or_else(|| {
                wasmtime::format_err!("`{}` lost its export `{}`", self.name, export.function)
            })?;
        func.call_async(&mut linked.store, params, results).await?;
        if let Some(call) = &call {
            let returned = render_all(results);
            for (store, interceptor) in linked.advice.iter_mut().rev() {
                interceptor
                    .wasmgate_interceptor_advice()
                    .call_after(&mut *store, call, &returned)
                    .await?;
            }
        }
        Ok(())
    }

    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiates it once, as a load-time check that it can be (a
    /// resident service keeps that instance as its shared one).
    pub(super) async fn trial(&self) -> wasmtime::Result<()> {
        match &self.residence {
            Some(Residence::Service(shared)) => shared.fill(self).await,
            _ => self.instantiate(super::host::far_future()).await.map(drop),
        }
    }

    /// Instantiates it (and its interceptors) for one importing instance.
    async fn instantiate(&self, deadline: std::time::Instant) -> wasmtime::Result<Linked> {
        let engine = self.component.engine();
        let mut store = self.stores.make(engine);
        store.data_mut().deadline = deadline;
        let instance = within_limit(
            "component",
            &self.name,
            self.pre.instantiate_async(&mut store),
        )
        .await?;
        let mut advice = Vec::with_capacity(self.advice.len());
        for each in &self.advice {
            let mut store = each.stores.make(engine);
            store.data_mut().deadline = deadline;
            let interceptor = within_limit(
                "interceptor",
                &each.name,
                each.pre.instantiate_async(&mut store),
            )
            .await?;
            advice.push((store, interceptor));
        }
        Ok(Linked {
            store,
            instance,
            advice,
        })
    }
}

/// `instantiating` (a `what` called `name`), stopped after
/// [`INSTANTIATE_LIMIT`] like any instantiation that runs away.
async fn within_limit<T>(
    what: &str,
    name: &str,
    instantiating: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    tokio::time::timeout(INSTANTIATE_LIMIT, instantiating)
        .await
        .map_err(|_| wasmtime::format_err!("instantiating {what} `{name}` timed out"))?
}

/// One wired function: which library, which of its exports.
struct Target {
    library: Arc<Library>,
    /// The importer's slot for its instance of `library`.
    slot: usize,
    export: Export,
}

impl Target {
    /// Calls the function for the instance in `caller`'s store.
    async fn call(
        &self,
        mut caller: StoreContextMut<'_, Host>,
        params: &[Val],
        results: &mut [Val],
    ) -> wasmtime::Result<()> {
        let deadline = caller.data().deadline;
        if let Some(Residence::Service(shared)) = &self.library.residence {
            let outcome = shared
                .call(&self.library, &self.export, params, results, deadline)
                .await;
            self.library.count(&outcome);
            return outcome;
        }
        let held = caller
            .data_mut()
            .wired
            .get_mut(self.slot)
            .and_then(Option::take);
        let mut linked = match held {
            Some(linked) => linked,
            None => self.library.instantiate(deadline).await?,
        };
        linked.store.data_mut().deadline = deadline;
        refuel(&mut linked.store);
        for (store, _) in &mut linked.advice {
            store.data_mut().deadline = deadline;
            refuel(store);
        }
        let outcome = self
            .library
            .call_export(&mut linked, &self.export, params, results)
            .await;
        self.library.count(&outcome);
        // An instance whose call failed may be in any state: never reused.
        if outcome.is_ok() {
            let wired = &mut caller.data_mut().wired;
            if wired.len() <= self.slot {
                wired.resize_with(self.slot + 1, || None);
            }
            wired[self.slot] = Some(linked);
        }
        outcome
    }
}

/// An interceptor refused a call: the caller traps with this.
#[derive(Debug, thiserror::Error)]
#[error("interceptor `{interceptor}` refused {component}.{function}: {reason}")]
pub struct Refused {
    interceptor: Arc<str>,
    component: Arc<str>,
    function: Arc<str>,
    reason: String,
}

/// Defines each of `foreign` (the component's imports no host capability
/// serves) in `linker`, served by the export of the same name of one of
/// `deps` (its `imports`, in order), after checking the two agree on every
/// function's type.
pub(super) fn link(
    engine: &Engine,
    linker: &mut Linker<Host>,
    component: &Component,
    foreign: &[String],
    deps: &[Arc<Library>],
) -> Result<(), LoadError> {
    let wanted = component.component_type();
    for name in foreign {
        let Some(ComponentItem::ComponentInstance(imported)) =
            wanted.get_import(engine, name).map(|found| found.ty)
        else {
            return Err(LoadError::Wiring(format!(
                "imports `{name}`, which is not an interface: only interfaces can be wired to components"
            )));
        };
        let found = deps.iter().enumerate().find_map(|(slot, library)| {
            match library
                .component
                .component_type()
                .get_export(engine, name)
                .map(|found| found.ty)
            {
                Some(ComponentItem::ComponentInstance(exported)) => Some((slot, library, exported)),
                _ => None,
            }
        });
        if let Some((_, library, _)) = found
            && let Some(Residence::Program { .. }) = library.residence
        {
            return Err(LoadError::Wiring(format!(
                "imports `{name}` from `{}`, a resident that runs a program (it exports wasi:cli/run): its one instance is busy running, so it serves no calls (a resident without `run` does)",
                library.name
            )));
        }
        let Some((slot, library, exported)) = found else {
            let listed: Vec<&str> = deps.iter().map(|library| library.name()).collect();
            return Err(LoadError::Unwired {
                interface: name.clone(),
                listed: if listed.is_empty() {
                    "it lists no imports".into()
                } else {
                    format!("none of its imports ({}) exports it", listed.join(", "))
                },
            });
        };
        let interface_index = library
            .component
            .get_export_index(None, name)
            .ok_or_else(|| {
                LoadError::Wiring(format!("`{}` lost its export `{name}`", library.name))
            })?;
        let mut instance = linker
            .instance(name)
            .map_err(|error| LoadError::Wiring(format!("{name}: {error:#}")))?;
        for (function, item) in imported.exports(engine) {
            let mismatch = |reason: String| LoadError::Mismatch {
                interface: name.clone(),
                function: function.to_string(),
                component: library.name.to_string(),
                reason,
            };
            let item = item.ty;
            let ComponentItem::ComponentFunc(want) = item else {
                if let ComponentItem::Resource(_) = item {
                    return Err(mismatch(
                        "it is a resource, and resources cannot cross between components".into(),
                    ));
                }
                continue;
            };
            let Some(ComponentItem::ComponentFunc(have)) =
                exported.get_export(engine, function).map(|found| found.ty)
            else {
                return Err(mismatch(
                    "the component does not export this function".into(),
                ));
            };
            same_type(&want, &have).map_err(mismatch)?;
            let export = library
                .component
                .get_export_index(Some(&interface_index), function)
                .ok_or_else(|| mismatch("the component does not export this function".into()))?;
            let target = Arc::new(Target {
                library: Arc::clone(library),
                slot,
                export: Export {
                    interface: Arc::from(name.as_str()),
                    function: Arc::from(function),
                    index: export,
                    ty: have,
                },
            });
            instance
                .func_new_async(function, move |caller, _ty, params, results| {
                    let target = Arc::clone(&target);
                    Box::new(async move { target.call(caller, params, results).await })
                })
                .map_err(|error| LoadError::Wiring(format!("{name}#{function}: {error:#}")))?;
        }
    }
    Ok(())
}

/// Every function `component` exports (in an interface or at its root), by
/// name; the first of a name wins.
fn exported_functions(component: &Component) -> HashMap<String, Export> {
    let engine = component.engine();
    let mut functions = HashMap::new();
    for (name, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(ty) => {
                if let Some(index) = component.get_export_index(None, name) {
                    functions.entry(name.to_string()).or_insert(Export {
                        interface: Arc::from(""),
                        function: Arc::from(name),
                        index,
                        ty,
                    });
                }
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(instance_index) = component.get_export_index(None, name) else {
                    continue;
                };
                for (function, item) in instance.exports(engine) {
                    let (ComponentItem::ComponentFunc(ty), Some(index)) = (
                        item.ty,
                        component.get_export_index(Some(&instance_index), function),
                    ) else {
                        continue;
                    };
                    functions.entry(function.to_string()).or_insert(Export {
                        interface: Arc::from(name),
                        function: Arc::from(function),
                        index,
                        ty,
                    });
                }
            }
            _ => {}
        }
    }
    functions
}

/// A value of type `ty` from its text (a path segment, a message).
fn parse_argument(ty: &Type, text: &str) -> Result<Val, String> {
    fn number<T: std::str::FromStr>(text: &str, make: fn(T) -> Val) -> Result<Val, String> {
        text.parse()
            .map(make)
            .map_err(|_| format!("`{text}` is not a number of the parameter's type"))
    }
    match ty {
        Type::String => Ok(Val::String(text.to_string())),
        Type::Bool => match text {
            "true" => Ok(Val::Bool(true)),
            "false" => Ok(Val::Bool(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        Type::Char => {
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => Err(format!("`{text}` is not one character")),
            }
        }
        Type::U8 => number(text, Val::U8),
        Type::U16 => number(text, Val::U16),
        Type::U32 => number(text, Val::U32),
        Type::U64 => number(text, Val::U64),
        Type::S8 => number(text, Val::S8),
        Type::S16 => number(text, Val::S16),
        Type::S32 => number(text, Val::S32),
        Type::S64 => number(text, Val::S64),
        Type::Float32 => number(text, Val::Float32),
        Type::Float64 => number(text, Val::Float64),
        Type::Enum(cases) => cases
            .names()
            .find(|case| *case == text)
            .map(|case| Val::Enum(case.to_string()))
            .ok_or_else(|| format!("`{text}` is not one of the enum's cases")),
        _ => {
            Err("only strings, numbers, booleans, characters and enums can be given as text".into())
        }
    }
}

/// Whether an import's function and an export's function have the same
/// parameter and result types (names may differ), none of them a resource,
/// stream or future.
fn same_type(want: &ComponentFunc, have: &ComponentFunc) -> Result<(), String> {
    let want_params: Vec<Type> = want.params().map(|(_, ty)| ty).collect();
    let have_params: Vec<Type> = have.params().map(|(_, ty)| ty).collect();
    let want_results: Vec<Type> = want.results().collect();
    let have_results: Vec<Type> = have.results().collect();
    if want_params.len() != have_params.len() {
        return Err(format!(
            "the importer passes {} parameters, the export takes {}",
            want_params.len(),
            have_params.len()
        ));
    }
    if want_params != have_params {
        return Err("the parameters' types differ".into());
    }
    if want_results != have_results {
        return Err("the results' types differ".into());
    }
    for ty in want_params.iter().chain(&want_results) {
        crosses(ty)?;
    }
    Ok(())
}

/// Refuses what cannot be copied from one store to another.
fn crosses(ty: &Type) -> Result<(), String> {
    fn each(mut types: impl Iterator<Item = Type>) -> Result<(), String> {
        types.try_for_each(|ty| crosses(&ty))
    }
    match ty {
        Type::Own(_) | Type::Borrow(_) => {
            Err("it passes a resource, and resources cannot cross between components".into())
        }
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => Err(
            "it passes a stream, future or error-context, which cannot cross between components"
                .into(),
        ),
        Type::List(list) => crosses(&list.ty()),
        Type::FixedLengthList(list) => crosses(&list.ty()),
        Type::Map(map) => crosses(&map.key()).and_then(|()| crosses(&map.value())),
        Type::Record(record) => each(record.fields().map(|field| field.ty)),
        Type::Tuple(tuple) => each(tuple.types()),
        Type::Variant(variant) => each(variant.cases().filter_map(|case| case.ty)),
        Type::Option(option) => crosses(&option.ty()),
        Type::Result(result) => each(result.ok().into_iter().chain(result.err())),
        _ => Ok(()),
    }
}

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

use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};
use wasmtime::{Engine, StoreContextMut};

use super::bindings::InterceptorPre;
use super::bindings::advice::{Argument, Call};
use super::component::LoadError;
use super::host::{Host, INSTANTIATE_LIMIT, Linked, StoreMaker};
use super::render::{render, render_all};
use crate::control::metrics::ComponentCalls;

/// A `[component]` ready to serve its exports to the components that import
/// it.
pub struct Library {
    name: Arc<str>,
    engine: Engine,
    component: Component,
    pre: InstancePre<Host>,
    stores: StoreMaker,
    /// Its interceptors, in order.
    advice: Vec<Arc<Advice>>,
    /// Counts its calls by outcome.
    calls: ComponentCalls,
}

/// An interceptor's advice, ready to be instantiated next to what it wraps.
pub struct Advice {
    name: Arc<str>,
    pre: InterceptorPre<Host>,
    stores: StoreMaker,
}

impl Library {
    /// A component's runtime; `advice` are its interceptors' libraries.
    pub(super) fn new(
        name: Arc<str>,
        component: Component,
        pre: InstancePre<Host>,
        stores: StoreMaker,
        advice: &[Arc<Library>],
        calls: ComponentCalls,
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
        Ok(Self {
            engine: component.engine().clone(),
            name,
            component,
            pre,
            stores,
            advice,
            calls,
        })
    }

    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiates it once, as a load-time check that it can be.
    pub(super) async fn trial(&self) -> wasmtime::Result<()> {
        self.instantiate(super::host::far_future()).await.map(drop)
    }

    /// Instantiates it (and its interceptors) for one importing instance.
    async fn instantiate(&self, deadline: std::time::Instant) -> wasmtime::Result<Linked> {
        let mut store = self.stores.make(&self.engine);
        store.data_mut().deadline = deadline;
        let instance =
            tokio::time::timeout(INSTANTIATE_LIMIT, self.pre.instantiate_async(&mut store))
                .await
                .map_err(|_| {
                    wasmtime::format_err!("instantiating component `{}` timed out", self.name)
                })??;
        let mut advice = Vec::with_capacity(self.advice.len());
        for each in &self.advice {
            let mut store = each.stores.make(&self.engine);
            store.data_mut().deadline = deadline;
            let interceptor =
                tokio::time::timeout(INSTANTIATE_LIMIT, each.pre.instantiate_async(&mut store))
                    .await
                    .map_err(|_| {
                        wasmtime::format_err!("instantiating interceptor `{}` timed out", each.name)
                    })??;
            advice.push((store, interceptor));
        }
        Ok(Linked {
            store,
            instance,
            advice,
        })
    }
}

/// One wired function: which library, which of its exports.
struct Target {
    library: Arc<Library>,
    /// The importer's slot for its instance of `library`.
    slot: usize,
    interface: Arc<str>,
    function: Arc<str>,
    export: ComponentExportIndex,
}

impl Target {
    /// Calls the function for the instance in `caller`'s store.
    async fn call(
        &self,
        mut caller: StoreContextMut<'_, Host>,
        ty: &ComponentFunc,
        params: &[Val],
        results: &mut [Val],
    ) -> wasmtime::Result<()> {
        let deadline = caller.data().deadline;
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
        for (store, _) in &mut linked.advice {
            store.data_mut().deadline = deadline;
        }
        let outcome = self.call_in(&mut linked, ty, params, results).await;
        let calls = &self.library.calls;
        match &outcome {
            Ok(()) => calls.ok.inc(),
            Err(error) if error.is::<Refused>() => calls.refused.inc(),
            Err(_) => calls.failed.inc(),
        }
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

    async fn call_in(
        &self,
        linked: &mut Linked,
        ty: &ComponentFunc,
        params: &[Val],
        results: &mut [Val],
    ) -> wasmtime::Result<()> {
        let call = (!linked.advice.is_empty()).then(|| Call {
            component: self.library.name.to_string(),
            interface_name: self.interface.to_string(),
            function: self.function.to_string(),
            arguments: ty
                .params()
                .zip(params)
                .map(|((name, _), value)| Argument {
                    name: name.to_string(),
                    value: render(value),
                })
                .collect(),
        });
        if let Some(call) = &call {
            for ((store, interceptor), advice) in linked.advice.iter_mut().zip(&self.library.advice)
            {
                if let Err(reason) = interceptor
                    .wasmgate_interceptor_advice()
                    .call_before(&mut *store, call)
                    .await?
                {
                    return Err(Refused {
                        interceptor: Arc::clone(&advice.name),
                        component: Arc::clone(&self.library.name),
                        function: Arc::clone(&self.function),
                        reason,
                    }
                    .into());
                }
            }
        }
        let func = linked
            .instance
            .get_func(&mut linked.store, self.export)
            .ok_or_else(|| {
                wasmtime::format_err!(
                    "`{}` lost its export `{}`",
                    self.library.name,
                    self.function
                )
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
                interface: Arc::from(name.as_str()),
                function: Arc::from(function),
                export,
            });
            instance
                .func_new_async(function, move |caller, ty, params, results| {
                    let target = Arc::clone(&target);
                    Box::new(async move { target.call(caller, &ty, params, results).await })
                })
                .map_err(|error| LoadError::Wiring(format!("{name}#{function}: {error:#}")))?;
        }
    }
    Ok(())
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

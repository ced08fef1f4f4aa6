//! `wasmgate run`: one program, once. A command component (it exports
//! `wasi:cli/run`) or a core WASI preview 1 module (it exports `_start`)
//! runs with the gateway's limits (memory, wall clock, CPU budget), the
//! process's stdio, the arguments given and only the environment variables
//! granted; `READY` goes to stderr once it is instantiated.
//!
//! Invariant: whatever the program does, the run ends by its deadline with
//! an exit code: the program's own, or a trap's (after its message); a file
//! that exports no entry point is refused before anything runs, naming what
//! it exports instead.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::component::{ComponentFile, LoadError};
use super::engine::GuestEngine;
use super::host::{StoreMaker, guard_time_and_fuel, hostcall_fuel};
use super::log::LogBudget;
use super::outbound::OutboundClient;
use super::supervision::Exit;

/// What a run may use.
pub struct RunLimits {
    /// Linear memory cap, in bytes.
    pub memory: usize,
    /// Wall-clock limit of the whole run.
    pub timeout: Duration,
    /// CPU budget (fuel), if any.
    pub fuel: Option<u64>,
    /// The environment variables it sees.
    pub env: Vec<(String, String)>,
    /// Host directories mapped into it (a profile's `files`).
    pub files: Vec<crate::config::FileGrant>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The program exited (or returned: 0) with this code.
    Exit(i32),
    /// It trapped, ran past its time or used up its fuel: the message.
    Trap(String),
}

/// Why a file could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Unreadable, too large, not WebAssembly, does not compile.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// It has no entry point; what it exports instead.
    #[error("{0}")]
    NotACommand(String),
    /// The engine could not be made.
    #[error("{0}")]
    Engine(String),
}

/// Runs the program in `path` with `args` (the first one is its name).
pub async fn run(path: &Path, args: &[String], limits: &RunLimits) -> Result<Ended, RunError> {
    let file = ComponentFile::read(path)?;
    let engine = GuestEngine::new(2, limits.fuel.is_some())
        .map_err(|error| RunError::Engine(format!("{error:#}")))?;
    let bytes = file.bytes();
    if wasmparser::Parser::is_component(bytes) {
        run_component(&engine, bytes, args, limits).await
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        run_module(engine.engine(), bytes, args, limits).await
    } else {
        Err(LoadError::NotWasm.into())
    }
}

async fn run_component(
    engine: &GuestEngine,
    bytes: &[u8],
    args: &[String],
    limits: &RunLimits,
) -> Result<Ended, RunError> {
    let component = Component::new(engine.engine(), bytes)
        .map_err(|error| LoadError::Compile(format!("{error:#}")))?;
    let instance_pre = engine
        .linker()
        .instantiate_pre(&component)
        .map_err(|error| LoadError::Link(format!("{error:#}")))?;
    let Ok(pre) = CommandPre::new(instance_pre) else {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        return Err(RunError::NotACommand(format!(
            "a component that exports no wasi:cli/run (it exports {}): not a command",
            listed(&exports)
        )));
    };
    let label: Arc<str> = Arc::from("run");
    let unused = || prometheus::IntCounter::new("unused", "not exported").expect("a valid counter");
    let stores = StoreMaker {
        handler: Arc::clone(&label),
        env: limits.env.clone(),
        memory: limits.memory,
        outbound: Arc::new([]),
        allow_private: false,
        client: Arc::new(OutboundClient::new()),
        hostcall_fuel: hostcall_fuel(0),
        topic_scope: Arc::clone(&label),
        max_publish: 0,
        pubsub_refused: unused(),
        log_budget: Arc::new(LogBudget::new(label, unused())),
        logging: false,
        config: Arc::default(),
        fuel: limits.fuel,
        command: Some(args.to_vec()),
        files: limits.files.iter().cloned().collect(),
        ready: None,
    };
    let mut store = stores.make(engine.engine());
    let deadline = Instant::now() + limits.timeout;
    store.data_mut().deadline = deadline;
    let ran = tokio::time::timeout_at(deadline.into(), async {
        let command = pre.instantiate_async(&mut store).await?;
        eprintln!("READY");
        command.wasi_cli_run().call_run(&mut store).await
    })
    .await;
    Ok(match ran {
        Err(_elapsed) => Ended::Trap(timed_out(limits.timeout)),
        Ok(Ok(Ok(()))) => Ended::Exit(0),
        Ok(Ok(Err(()))) => Ended::Exit(1),
        Ok(Err(error)) => ended_by(&error, limits),
    })
}

/// A core module's store: its WASI preview 1 context and its memory cap.
struct Preview1 {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    limits: StoreLimits,
    deadline: Instant,
}

async fn run_module(
    engine: &Engine,
    bytes: &[u8],
    args: &[String],
    limits: &RunLimits,
) -> Result<Ended, RunError> {
    let module =
        Module::new(engine, bytes).map_err(|error| LoadError::Compile(format!("{error:#}")))?;
    let has_start = module
        .exports()
        .any(|export| export.name() == "_start" && export.ty().func().is_some());
    if !has_start {
        let exports: Vec<String> = module
            .exports()
            .map(|export| export.name().to_string())
            .collect();
        return Err(RunError::NotACommand(format!(
            "a core module that exports no `_start` function (it exports {}): not a command",
            listed(&exports)
        )));
    }
    let mut linker: Linker<Preview1> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut Preview1| &mut state.wasi)
        .map_err(|error| RunError::Engine(format!("{error:#}")))?;
    let mut wasi = WasiCtx::builder();
    wasi.args(args)
        .envs(&limits.env)
        .inherit_stdin()
        .inherit_stdout()
        .inherit_stderr();
    for grant in &limits.files {
        super::host::preopen(&mut wasi, grant).map_err(|error| {
            RunError::Engine(format!("files: {}: {error:#}", grant.dir.display()))
        })?;
    }
    let deadline = Instant::now() + limits.timeout;
    let mut store = Store::new(
        engine,
        Preview1 {
            wasi: wasi.build_p1(),
            limits: StoreLimitsBuilder::new().memory_size(limits.memory).build(),
            deadline,
        },
    );
    store.limiter(|state| &mut state.limits);
    guard_time_and_fuel(&mut store, |state| state.deadline, limits.fuel);
    let ran = tokio::time::timeout_at(deadline.into(), async {
        let instance = linker.instantiate_async(&mut store, &module).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        eprintln!("READY");
        start.call_async(&mut store, ()).await
    })
    .await;
    Ok(match ran {
        Err(_elapsed) => Ended::Trap(timed_out(limits.timeout)),
        Ok(Ok(())) => Ended::Exit(0),
        Ok(Err(error)) => ended_by(&error, limits),
    })
}

/// An exit the program asked for, or the trap that ended it.
fn ended_by(error: &wasmtime::Error, limits: &RunLimits) -> Ended {
    if error.is::<super::host::DeadlineExceeded>() {
        return Ended::Trap(timed_out(limits.timeout));
    }
    match Exit::from_error(error, limits.fuel) {
        Exit::Code(code) => Ended::Exit(code),
        Exit::OutOfFuel(fuel) => Ended::Trap(format!("used up its CPU budget of {fuel} fuel")),
        Exit::Trap(message) => Ended::Trap(message),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "ran past its time limit of {}",
        humantime::format_duration(timeout)
    )
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

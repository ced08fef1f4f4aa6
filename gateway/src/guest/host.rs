//! What a guest's store holds: its WASI and wasi:http contexts, its resource
//! table, its limits and its deadline.
//!
//! Invariant: default deny. A guest gets no preopened directory, no socket, no
//! inherited stdio, outbound HTTP only to what its handler's `outbound` rules
//! allow, and only the environment variables its handler grants; its stdout
//! and stderr become log lines tagged with the handler's name.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::log::{GuestLog, GuestStream, LogBudget};
use super::outbound::{Outbound, OutboundClient};
use super::pubsub::Attachment;

/// Store data of one guest instance.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Outbound,
    limits: GuestLimits,
    /// When the current request must be finished; far in the future while the
    /// instance waits in the pool.
    pub(super) deadline: Instant,
    /// The pub/sub hub and, for a stream guest, its connection.
    pub(super) attachment: Attachment,
    /// Requests this instance has served to their end (with `reuse`).
    pub(super) served: u32,
    /// Its configuration values (`wasi:config/store`).
    pub(super) config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    /// The fuel each call gets (`limits.fuel`), when it has a CPU budget.
    fuel: Option<u64>,
    /// The instances of the components wired to its imports, by position in
    /// its `imports`: made at the first call, kept for its own life.
    pub(super) wired: Vec<Option<Linked>>,
}

/// One instance of a wired component (see [`super::wire`]), owned by the
/// instance importing it.
pub(super) struct Linked {
    pub(super) store: wasmtime::Store<Host>,
    pub(super) instance: wasmtime::component::Instance,
    /// Its interceptors' instances, in order.
    pub(super) advice: Vec<(wasmtime::Store<Host>, super::bindings::Interceptor)>,
}

impl Host {
    /// A fresh context for `handler`, seeing only `env`.
    fn new(maker: &StoreMaker, limits: StoreLimits) -> Self {
        let (handler, env) = (&maker.handler, &maker.env);
        let mut wasi = WasiCtx::builder();
        wasi.max_random_size(MAX_RANDOM).envs(env);
        // A command run (`wasmgate run`) has the process's stdio and its
        // arguments; a served guest's output becomes log lines, and without
        // the `logging` capability goes nowhere (the builder's default sink).
        if let Some(args) = &maker.command {
            wasi.args(args)
                .inherit_stdin()
                .inherit_stdout()
                .inherit_stderr();
        } else if maker.logging {
            wasi.stdout(GuestLog::new(
                &maker.log_budget,
                GuestStream::Stdout,
                maker.ready.clone(),
            ))
            .stderr(GuestLog::new(&maker.log_budget, GuestStream::Stderr, None));
        }
        for grant in maker.files.iter() {
            // Checked at load; a directory removed since is left out (the
            // guest finds nothing there), never a failed store.
            if let Err(error) = preopen(&mut wasi, grant) {
                tracing::warn!(
                    handler = &**handler,
                    dir = %grant.dir.display(),
                    "a files directory cannot be opened: {error:#}"
                );
            }
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        Self {
            table,
            wasi: wasi.build(),
            http,
            hooks: Outbound::new(
                Arc::clone(handler),
                Arc::clone(&maker.outbound),
                maker.allow_private,
                Arc::clone(&maker.client),
            ),
            limits: GuestLimits {
                limits,
                memory_denied: false,
            },
            deadline: far_future(),
            attachment: Attachment::new(
                Arc::clone(&maker.topic_scope),
                maker.max_publish,
                maker.pubsub_refused.clone(),
            ),
            served: 0,
            config: Arc::clone(&maker.config),
            fuel: maker.fuel,
            wired: Vec::new(),
        }
    }
}

impl Host {
    /// Where its requests to `http://next/` go while it serves the current
    /// request as a middleware (`None`: nowhere, like any unlisted host).
    pub(super) fn set_next(&mut self, next: Option<Arc<dyn super::outbound::NextHop>>) {
        self.hooks.next = next;
    }

    /// Whether the memory cap refused a growth: a trap that follows is the
    /// guest running out of memory.
    pub(super) fn memory_denied(&self) -> bool {
        self.limits.memory_denied
    }
}

/// The handler's memory cap, remembering whether it ever said no.
struct GuestLimits {
    limits: StoreLimits,
    memory_denied: bool,
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.memory_denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Makes the stores of one handler: its environment, its memory cap, and
/// the epoch callback that enforces each call's deadline.
#[derive(Clone)]
pub(super) struct StoreMaker {
    pub(super) handler: Arc<str>,
    pub(super) env: Vec<(String, String)>,
    pub(super) memory: usize,
    pub(super) outbound: Arc<[crate::config::OutboundRule]>,
    /// Whether allowed names may lead to internal addresses.
    pub(super) allow_private: bool,
    pub(super) client: Arc<OutboundClient>,
    /// Bytes a guest may hand the host in one call (see [`hostcall_fuel`]).
    pub(super) hostcall_fuel: usize,
    /// Where the handler's pub/sub topics live (its `topic_scope`).
    pub(super) topic_scope: Arc<str>,
    /// The largest message its guests may publish.
    pub(super) max_publish: usize,
    /// Counts publications and subscriptions refused by pub/sub's bounds.
    pub(super) pubsub_refused: prometheus::IntCounter,
    /// The handler's allowance of log lines, shared by its stores.
    pub(super) log_budget: Arc<LogBudget>,
    /// Whether its stdout and stderr become log lines (`logging`).
    pub(super) logging: bool,
    /// Its configuration values, resolved at load.
    pub(super) config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    /// Fuel per call (`limits.fuel`); `None`: no CPU budget.
    pub(super) fuel: Option<u64>,
    /// For `wasmgate run` only: the program's arguments (and the process's
    /// stdio instead of log lines).
    pub(super) command: Option<Vec<String>>,
    /// Host directories mapped into each store (`files`).
    pub(super) files: Arc<[crate::config::FileGrant]>,
    /// For a resident's run only: set when it prints `READY` on stdout.
    pub(super) ready: Option<super::log::Ready>,
}

/// Maps `grant`'s host directory into the guest, read-only unless it says
/// `write`.
pub(super) fn preopen(
    wasi: &mut wasmtime_wasi::WasiCtxBuilder,
    grant: &crate::config::FileGrant,
) -> wasmtime::Result<()> {
    let perms = if grant.write {
        wasmtime_wasi::FsPerms::ReadWrite
    } else {
        wasmtime_wasi::FsPerms::ReadOnly
    };
    wasi.preopened_dir(&grant.dir, &grant.at, perms).map(drop)
}

/// Resources (streams, fields, requests, pollables…) one guest may hold in
/// the host at once; far above what serving a request needs.
const MAX_RESOURCES: usize = 10_000;
/// Component-model handles one store may hold at once.
const MAX_HANDLES: usize = 10_000;
/// The largest `get-random-bytes` answer.
const MAX_RANDOM: u64 = 1024 * 1024;
/// In-memory size of one guest-made header map (requests and responses).
const FIELD_SIZE_LIMIT: usize = 128 * 1024;

/// Bytes a guest may pass to the host in one call: enough for the largest
/// stream message (`send`, `emit`) twice over, at least 8 MiB; wasmtime's
/// default is 128 MiB, which lets one call make the host allocate that much.
pub(super) fn hostcall_fuel(max_message: usize) -> usize {
    max_message.saturating_mul(2).max(8 * 1024 * 1024)
}

/// The guest ran past its deadline; raised from the epoch callback so it
/// unwinds the guest like a trap.
#[derive(Debug, thiserror::Error)]
#[error("the guest ran past its deadline")]
pub(super) struct DeadlineExceeded;

impl StoreMaker {
    pub(super) fn make(&self, engine: &wasmtime::Engine) -> wasmtime::Store<Host> {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(self.memory)
            .build();
        let mut store = wasmtime::Store::new(engine, Host::new(self, limits));
        store.limiter(|host| &mut host.limits);
        // Guards against a guest making the host allocate for it.
        store.set_hostcall_fuel(self.hostcall_fuel);
        store.set_max_component_handles(MAX_HANDLES);
        guard_time_and_fuel(&mut store, |host| host.deadline, self.fuel);
        store
    }
}

/// Every epoch tick a running guest either yields to tokio (so one busy
/// guest cannot starve the worker it runs on) or, past the deadline its
/// store data holds, is stopped. With fuel metering on, a store without
/// fuel could not run at all: with no budget it gets all there is (with
/// metering off, setting fuel fails and nothing is metered).
pub(super) fn guard_time_and_fuel<T: Send + 'static>(
    store: &mut wasmtime::Store<T>,
    deadline: fn(&T) -> Instant,
    fuel: Option<u64>,
) {
    store.epoch_deadline_callback(move |store| {
        if Instant::now() >= deadline(store.data()) {
            Err(DeadlineExceeded.into())
        } else {
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
}

/// Fills `store`'s CPU budget for the call about to start (a request, a
/// stream callback, a call into a component), when it has one.
pub(super) fn refuel(store: &mut wasmtime::Store<Host>) {
    if let Some(budget) = store.data().fuel {
        let _ = store.set_fuel(budget);
    }
}

/// Whether `error` is a guest running out of its CPU budget.
pub(super) fn is_out_of_fuel(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel))
}

/// The trap's cause on one line (`wasm trap: wasm \`unreachable\` instruction
/// executed`), without the multi-line wasm backtrace, which goes to the debug log.
pub(super) fn trap_summary(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

/// How long instantiating a component may run (its start functions, data
/// initialisation): one that runs away is stopped like a request would be.
pub(super) const INSTANTIATE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A deadline that never comes (about 30 years away: `Instant` cannot hold much more portably).
pub(super) fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(30 * 365 * 24 * 3600)
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn every_store_gets_the_host_side_guards() {
        let engine = wasmtime::Engine::default();
        let maker = StoreMaker {
            handler: Arc::from("guarded"),
            env: Vec::new(),
            memory: 1 << 20,
            outbound: Arc::new([]),
            allow_private: false,
            client: Arc::new(OutboundClient::new()),
            hostcall_fuel: hostcall_fuel(32 * 1024 * 1024),
            topic_scope: Arc::from("guarded"),
            max_publish: 1024,
            pubsub_refused: prometheus::IntCounter::new("refused", "test").expect("counter"),
            log_budget: Arc::new(LogBudget::new(
                Arc::from("guarded"),
                prometheus::IntCounter::new("dropped", "test").expect("counter"),
            )),
            logging: true,
            config: Arc::default(),
            fuel: None,
            command: None,
            files: Arc::new([]),
            ready: None,
        };
        let mut store = maker.make(&engine);
        assert_eq!(store.hostcall_fuel(), 64 * 1024 * 1024);
        assert_eq!(store.max_component_handles(), MAX_HANDLES);
        assert_eq!(store.data_mut().table.max_capacity(), MAX_RESOURCES);
        assert_eq!(hostcall_fuel(1024), 8 * 1024 * 1024);
    }
}

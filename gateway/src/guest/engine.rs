//! The one wasmtime [`Engine`] of the process, its linker and its epoch clock.
//!
//! Invariant: there is exactly one engine (and one epoch ticker thread) per
//! gateway; every component, pre-instance and store of every generation is
//! made from it, so compiled code and pool slots are shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{WebsocketService, sse};
use super::host::Host;
use super::pubsub::HasAttachment;

/// How often the epoch advances. A running guest is interrupted at most this
/// late to yield to tokio or to be stopped at its deadline; 10 ms keeps the
/// callback cost negligible (as Spin does).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// rustc's wasm32-wasip2 components hold three core instances, tools like
/// componentize-js a few more: size core-instance slots per component slot.
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// Memories and tables per component slot (main module plus adapter shims).
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Bytes of a released memory / table slot reset in place rather than decommitted.
const MEMORY_KEEP_RESIDENT: usize = 4 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The engine and what is derived from it once.
pub struct GuestEngine {
    engine: Engine,
    linker: Linker<Host>,
    /// Whether guests' instructions are counted (fuel), for CPU budgets.
    fuel: bool,
    _ticker: EpochTicker,
}

impl GuestEngine {
    /// Builds the engine, preferring the pooling allocator for up to
    /// `max_instances` concurrent instances; with `fuel`, guests' code counts
    /// its instructions (`limits.fuel`), which costs some speed, so it is
    /// on only when a configuration asks for a CPU budget.
    pub fn new(max_instances: u32, fuel: bool) -> anyhow::Result<Self> {
        let engine = match Engine::new(&engine_config(Some(pooling(max_instances)), fuel)) {
            Ok(engine) => engine,
            Err(error) => {
                // The pool reserves address space for every slot up front; hosts
                // with a small virtual address space (or a tight ulimit -v)
                // cannot hold it.
                tracing::warn!(
                    error = format!("{error:?}"),
                    "pooling allocator unavailable; falling back to on-demand allocation (slower instantiation)"
                );
                Engine::new(&engine_config(None, fuel))
                    .map_err(|error| anyhow::anyhow!("{error:?}"))
                    .context("creating the wasmtime engine")?
            }
        };
        let mut linker = Linker::new(&engine);
        // Components from ordinary toolchains (rustc's wasip2 std, componentize-js,
        // componentize-py, wasi-sdk) import wasi:cli, filesystem and sockets even
        // when they only serve HTTP: link all of WASI 0.2; the per-store context
        // grants none of it.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| anyhow::anyhow!("{error:?}"))
            .context("linking WASI 0.2")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|error| anyhow::anyhow!("{error:?}"))
            .context("linking wasi:http")?;
        // WASI 0.3 and wasi:http@0.3 (the `wasi:http/service` world), granted
        // as little as 0.2. Components made with wasm32-wasip2 toolchains
        // import 0.2 interfaces (through std) next to these: both stay linked.
        wasmtime_wasi::p3::add_to_linker(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p3::add_to_linker(&mut linker))
            .map_err(|error| anyhow::anyhow!("{error:?}"))
            .context("linking WASI 0.3")?;
        // A store's configuration values: its component's `config.*`, resolved
        // at load (nothing at all without the `config` capability).
        wasmtime_wasi_config::add_to_linker(&mut linker, |host: &mut Host| {
            wasmtime_wasi_config::WasiConfig::from(&*host.config)
        })
        .map_err(|error| anyhow::anyhow!("{error:?}"))
        .context("linking wasi:config")?;
        // The streaming imports reach only a store's pub/sub attachment.
        WebsocketService::add_to_linker::<Host, HasAttachment>(&mut linker, |host| {
            &mut host.attachment
        })
        .and_then(|()| {
            sse::add_to_linker::<Host, HasAttachment>(&mut linker, |host| &mut host.attachment)
        })
        .map_err(|error| anyhow::anyhow!("{error:?}"))
        .context("linking wasmgate:streaming")?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            fuel,
            _ticker: ticker,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether guests' instructions are counted against `limits.fuel`.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// The linker shared by every component.
    pub fn linker(&self) -> &Linker<Host> {
        &self.linker
    }
}

fn engine_config(pooling: Option<PoolingAllocationConfig>, fuel: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // WASI 0.3 handlers run on the component model's async machinery
    // (`run_concurrent`), which concurrency support (on by default) provides.
    // Copy-on-write heap images make instantiation map the initial memory
    // instead of copying it.
    config.memory_init_cow(true);
    if let Some(pooling) = pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

fn pooling(max_instances: u32) -> PoolingAllocationConfig {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(max_instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(max_instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(max_instances)
        // JS and Python runtimes have large instance metadata and tables.
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .table_elements(100_000)
        // Resetting a released slot with memset (only the pages the guest
        // dirtied, where the kernel offers PAGEMAP_SCAN) instead of madvise
        // spares the next instance its page faults and the process its TLB
        // shootdowns: about 1.7x req/s for small guests on this machine. The
        // cost is bounded resident memory: at most this much per warm slot.
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pooling
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own OS thread (not
/// a tokio task: a busy runtime must not delay the clock that interrupts the
/// guests keeping it busy). Dropping it stops and joins the thread.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the epoch thread: guest time limits will not apply");
        }
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether `error` is the pooling allocator saying that every instance (or
/// memory, or table) slot is taken: a full gateway, not a broken guest.
pub(super) fn is_pool_full(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
}

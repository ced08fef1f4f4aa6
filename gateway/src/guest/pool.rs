//! Per handler, instances instantiated ahead of the requests that will use them.
//!
//! Invariant: an instance serves exactly one request and is then dropped, so
//! nothing a guest keeps in memory reaches the next request; and a pool never
//! outlives its handler (its refill task is aborted with it), so instances of
//! an old component version are never handed out.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use super::host::{Host, INSTANTIATE_LIMIT, StoreMaker, far_future};
use crate::control::metrics::HandlerMetrics;

/// An instantiated guest waiting for its request.
pub(super) struct Ready {
    pub(super) store: Store<Host>,
    pub(super) proxy: Proxy,
}

/// What every instance of one handler is made with.
pub(super) struct Blueprint {
    pub(super) pre: ProxyPre<Host>,
    pub(super) stores: StoreMaker,
    pub(super) metrics: Arc<HandlerMetrics>,
}

/// Ready instances of one handler, refilled in the background.
pub(super) struct Pool {
    shared: Arc<Shared>,
    _refill: AbortOnDropHandle<()>,
}

struct Shared {
    blueprint: Blueprint,
    ready: Mutex<Vec<Ready>>,
    target: usize,
    wanted: Notify,
}

impl Pool {
    /// Instantiates once (so a component that cannot be instantiated is
    /// rejected here, not at its first request), fills a pool of `target`
    /// ready instances, then keeps it filled from a background task. Needs a
    /// tokio runtime.
    pub(super) async fn start(blueprint: Blueprint, target: usize) -> wasmtime::Result<Self> {
        let first = blueprint.instantiate().await?;
        let shared = Arc::new(Shared {
            blueprint,
            ready: Mutex::new(Vec::with_capacity(target.max(1))),
            target,
            wanted: Notify::new(),
        });
        shared.lock().push(first);
        shared.fill().await;
        let refill = AbortOnDropHandle::new(tokio::spawn(refill(Arc::clone(&shared))));
        Ok(Self {
            shared,
            _refill: refill,
        })
    }

    /// A ready instance, or a fresh one when the pool is empty.
    pub(super) async fn take(&self) -> wasmtime::Result<Ready> {
        let ready = {
            let mut ready = self.shared.lock();
            let taken = ready.pop();
            self.shared
                .blueprint
                .metrics
                .pool_ready
                .set(ready.len() as i64);
            taken
        };
        self.shared.wanted.notify_one();
        match ready {
            Some(ready) => Ok(ready),
            None => self.shared.blueprint.instantiate().await,
        }
    }
}

impl Shared {
    /// Instantiates until the pool holds its target.
    async fn fill(&self) {
        while self.lock().len() < self.target {
            match self.blueprint.instantiate().await {
                Ok(ready) => {
                    let mut pool = self.lock();
                    pool.push(ready);
                    self.blueprint.metrics.pool_ready.set(pool.len() as i64);
                }
                Err(error) => {
                    // Usually the pooling allocator is full; requests still
                    // instantiate inline, and the next take retries the fill.
                    tracing::debug!(
                        handler = &*self.blueprint.stores.handler,
                        error = format!("{error:#}"),
                        "could not prewarm an instance"
                    );
                    break;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Ready>> {
        // The lock only guards push/pop, which cannot panic half-way.
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn refill(shared: Arc<Shared>) {
    loop {
        shared.wanted.notified().await;
        shared.fill().await;
    }
}

impl Blueprint {
    async fn instantiate(&self) -> wasmtime::Result<Ready> {
        let started = std::time::Instant::now();
        let mut store = self.stores.make(self.pre.engine());
        store.data_mut().deadline = std::time::Instant::now() + INSTANTIATE_LIMIT;
        let proxy = self.pre.instantiate_async(&mut store).await?;
        // Waiting in the pool costs nothing; each request sets its own.
        store.data_mut().deadline = far_future();
        self.metrics
            .instantiation
            .observe(started.elapsed().as_secs_f64());
        Ok(Ready { store, proxy })
    }
}

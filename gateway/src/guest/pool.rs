//! Per handler, instances instantiated ahead of the requests that will use
//! them, and (with `reuse`) instances whose request ended well, waiting for
//! the next one.
//!
//! Invariant: by default an instance serves exactly one request and is then
//! dropped, so nothing a guest keeps in memory reaches the next request.
//! With `reuse`, an instance comes back only through [`Returner::give_back`]
//! after a clean run, serves at most `max_requests`, and waits at most
//! `idle`. A pool never outlives its handler (its refill task is aborted with
//! it, and returners hold it weakly), so instances of an old component
//! version are never handed out.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p3::bindings::Service;

use super::component::HttpPre;
use super::host::{Host, INSTANTIATE_LIMIT, StoreMaker, far_future};
use crate::config::Reuse;
use crate::control::metrics::HandlerMetrics;

/// An instantiated guest waiting for its request.
pub(super) struct Ready {
    pub(super) store: Store<Host>,
    pub(super) guest: Instance,
}

/// The instantiated component, by the wasi:http it speaks.
pub(super) enum Instance {
    /// WASI 0.2 (`incoming-handler`).
    P2(Proxy),
    /// WASI 0.3 (`handler`).
    P3(Service),
}

/// What every instance of one handler is made with.
pub(super) struct Blueprint {
    pub(super) pre: HttpPre,
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
    reuse: Option<Reuse>,
    /// Instances that served a request and may serve another, newest last,
    /// with when each came back.
    reused: Mutex<Vec<(Ready, Instant)>>,
    /// The most instances kept waiting for reuse (the handler's concurrency).
    max_reused: usize,
}

/// Hands an instance back after a clean run, if its handler still exists.
pub(super) struct Returner {
    shared: Weak<Shared>,
    max_requests: u32,
}

impl Returner {
    /// Keeps `ready` for the next request unless it has served its
    /// `max_requests` or the pool is full or gone.
    pub(super) fn give_back(self, mut ready: Ready) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let host = ready.store.data_mut();
        host.served += 1;
        // A guest that was refused memory may be in a state it did not plan
        // for, even if it answered: start the next request afresh.
        if host.served >= self.max_requests || host.memory_denied() {
            return;
        }
        // Waiting costs nothing; the next request sets its own.
        host.deadline = far_future();
        host.attachment.hub = None;
        let mut reused = shared.reused();
        if let Some(reuse) = shared.reuse {
            drop_expired(&mut reused, reuse.idle);
        }
        if reused.len() < shared.max_reused {
            reused.push((ready, Instant::now()));
        }
        shared
            .blueprint
            .metrics
            .pool_reused
            .set(reused.len() as i64);
    }
}

impl Pool {
    /// Instantiates once (so a component that cannot be instantiated is
    /// rejected here, not at its first request), fills a pool of `target`
    /// ready instances, then keeps it filled from a background task. Needs a
    /// tokio runtime.
    pub(super) async fn start(
        blueprint: Blueprint,
        target: usize,
        reuse: Option<Reuse>,
        max_reused: usize,
    ) -> wasmtime::Result<Self> {
        let first = blueprint.instantiate().await?;
        let shared = Arc::new(Shared {
            blueprint,
            ready: Mutex::new(Vec::with_capacity(target.max(1))),
            target,
            wanted: Notify::new(),
            reuse,
            reused: Mutex::new(Vec::new()),
            max_reused,
        });
        shared.lock().push(first);
        shared.fill().await;
        let refill = AbortOnDropHandle::new(tokio::spawn(refill(Arc::clone(&shared))));
        Ok(Self {
            shared,
            _refill: refill,
        })
    }

    /// Where a clean run gives its instance back, when the handler reuses them.
    pub(super) fn returner(&self) -> Option<Returner> {
        self.shared.reuse.map(|reuse| Returner {
            shared: Arc::downgrade(&self.shared),
            max_requests: reuse.max_requests,
        })
    }

    /// An instance that served before and waited less than `idle`, else a
    /// ready instance, else a fresh one when the pool is empty.
    pub(super) async fn take(&self) -> wasmtime::Result<Ready> {
        if let Some(reused) = self.shared.take_reused() {
            return Ok(reused);
        }
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

    fn reused(&self) -> std::sync::MutexGuard<'_, Vec<(Ready, Instant)>> {
        self.reused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned instance that has not idled too long
    /// (the newest is the warmest); the expired ones are dropped.
    fn take_reused(&self) -> Option<Ready> {
        let idle = self.reuse?.idle;
        let mut reused = self.reused();
        let (ready, returned) = reused.pop()?;
        let fresh = returned.elapsed() <= idle;
        if !fresh {
            // This one and every older one waited too long.
            reused.clear();
        }
        self.blueprint.metrics.pool_reused.set(reused.len() as i64);
        fresh.then_some(ready)
    }

    /// Drops the instances that waited longer than `idle`.
    fn expire(&self, idle: Duration) {
        let mut reused = self.reused();
        drop_expired(&mut reused, idle);
        self.blueprint.metrics.pool_reused.set(reused.len() as i64);
    }
}

/// Drops from `reused` (oldest first) those that waited longer than
/// `idle`: one clock reading, and no look past the first still fresh.
fn drop_expired(reused: &mut Vec<(Ready, Instant)>, idle: Duration) {
    let now = Instant::now();
    let expired = reused
        .iter()
        .take_while(|(_, returned)| now.duration_since(*returned) > idle)
        .count();
    reused.drain(..expired);
}

async fn refill(shared: Arc<Shared>) {
    // With reuse, also wakes every `idle` to drop instances nobody took, so
    // an idle handler holds no reused instance (nor its pooling slot) long.
    let idle = shared.reuse.map(|reuse| reuse.idle);
    loop {
        match idle {
            Some(idle) => {
                if tokio::time::timeout(idle, shared.wanted.notified())
                    .await
                    .is_err()
                {
                    shared.expire(idle);
                    continue;
                }
            }
            None => shared.wanted.notified().await,
        }
        shared.fill().await;
    }
}

impl Blueprint {
    async fn instantiate(&self) -> wasmtime::Result<Ready> {
        let started = std::time::Instant::now();
        let engine = match &self.pre {
            HttpPre::P2(pre) => pre.engine(),
            HttpPre::P3(pre) => pre.instance_pre().engine(),
        };
        let mut store = self.stores.make(engine);
        store.data_mut().deadline = std::time::Instant::now() + INSTANTIATE_LIMIT;
        let guest = match &self.pre {
            HttpPre::P2(pre) => Instance::P2(pre.instantiate_async(&mut store).await?),
            HttpPre::P3(pre) => Instance::P3(pre.instantiate_async(&mut store).await?),
        };
        // Waiting in the pool costs nothing; each request sets its own.
        store.data_mut().deadline = far_future();
        self.metrics
            .instantiation
            .observe(started.elapsed().as_secs_f64());
        Ok(Ready { store, guest })
    }
}

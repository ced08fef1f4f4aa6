//! What WebSocket connections and SSE streams share: opening a stream (a
//! store linked to the connection's queues, the guest instantiated and asked
//! to accept) and calling the guest under the handler's time limit.
//!
//! Invariant: the two stream worlds differ only in their bindings
//! ([`StreamGuest`]) and in their `run` loops; everything else is here once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use wasmtime::Store;

use super::bindings::types::{Refusal, Request};
use super::engine::is_pool_full;
use super::host::{Host, INSTANTIATE_LIMIT, StoreMaker, refuel};
use super::pubsub::{Ending, Hub, Link, Outgoing, Published};
use crate::config::StreamLimits;
use crate::control::metrics::HandlerMetrics;

/// The bindings of one stream world, as far as opening a stream goes.
pub trait StreamGuest: Sized + Send {
    /// The world's pre-instance.
    type Pre: Send + Sync;

    /// The engine `pre` belongs to.
    fn engine(pre: &Self::Pre) -> &wasmtime::Engine;

    /// Instantiates the guest.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<Host>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;

    /// Asks the guest whether to accept the stream (`on-open`, `on-subscribe`).
    fn accept(
        &self,
        store: &mut Store<Host>,
        request: &Request,
    ) -> impl Future<Output = wasmtime::Result<Result<(), Refusal>>> + Send;
}

/// Implements [`StreamGuest`] for a world's bindings (bindgen's pre-instance
/// types share no trait, so the impl is written once here): `$interface` and
/// `$accept` name the export that asks the guest to accept a stream.
macro_rules! stream_guest {
    ($guest:ty, $pre:ty, $interface:ident, $accept:ident) => {
        impl $crate::guest::stream::StreamGuest for $guest {
            type Pre = $pre;

            fn engine(pre: &Self::Pre) -> &wasmtime::Engine {
                pre.engine()
            }

            async fn instantiate(
                pre: &Self::Pre,
                store: &mut wasmtime::Store<Host>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate_async(store).await
            }

            async fn accept(
                &self,
                store: &mut wasmtime::Store<Host>,
                request: &$crate::guest::bindings::types::Request,
            ) -> wasmtime::Result<Result<(), $crate::guest::bindings::types::Refusal>> {
                self.$interface().$accept(store, request).await
            }
        }
    };
}
pub(super) use stream_guest;

/// Why a stream was not opened.
pub enum Refused {
    /// The guest turned it down with this HTTP status and reason.
    ByGuest(u16, String),
    /// No instance could be had (the handler's concurrency, the instance
    /// pool): the client may retry shortly.
    Saturated(String),
    /// The guest failed (trap, time limit, instantiation).
    Failed(String),
}

/// The opening request as the guest sees it.
pub struct Opening {
    /// The request method.
    pub method: String,
    /// Path and query.
    pub path_with_query: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One accepted stream and the guest instance that serves it, for its life.
///
/// Its parts are public for the connection's task (`crate::http`), which
/// takes it apart: the guest stays behind [`Calls`].
pub struct Stream<G> {
    /// The guest, called one event at a time.
    pub calls: Calls<G>,
    /// What the guest sends to the client.
    pub outbox: mpsc::Receiver<Outgoing>,
    /// Publications on the topics the guest subscribed to.
    pub inbox: mpsc::Receiver<Published>,
    /// Set when the stream is to end from outside its task.
    pub ending: Arc<Ending>,
    /// The handler's stream limits.
    pub limits: StreamLimits,
    /// The handler's stream counters.
    pub metrics: Arc<HandlerMetrics>,
    /// The stream's place while it is open: drop it when the stream ends.
    pub open: Open,
}

/// What an open stream holds, all given back when it is dropped: its
/// subscriptions in the hub, its count in `streams_open`, and its handler's
/// concurrency permit (a stream counts against `limits.concurrency` for its
/// whole life, like a request).
pub struct Open {
    hub: Arc<Hub>,
    id: u64,
    metrics: Arc<HandlerMetrics>,
    _concurrency: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.hub.leave(self.id);
        self.metrics.streams_open.dec();
    }
}

/// What opening a stream needs from its handler.
pub(super) struct StreamSetup<'a> {
    pub(super) stores: &'a StoreMaker,
    pub(super) hub: &'a Arc<Hub>,
    /// Each guest call's time limit.
    pub(super) timeout: Duration,
    pub(super) limits: &'a StreamLimits,
    pub(super) metrics: &'a Arc<HandlerMetrics>,
    pub(super) concurrency: OwnedSemaphorePermit,
}

/// The guest instance of a stream, called one event at a time.
pub struct Calls<G> {
    pub(super) store: Store<Host>,
    pub(super) guest: G,
    pub(super) timeout: Duration,
    pub(super) handler: Arc<str>,
}

impl<G: StreamGuest> Stream<G> {
    /// Makes a store linked to a new connection, instantiates the guest and
    /// asks it whether to accept `opening`.
    pub(super) async fn open(
        pre: &G::Pre,
        setup: StreamSetup<'_>,
        opening: Opening,
    ) -> Result<Self, Refused> {
        let StreamSetup {
            stores,
            hub,
            timeout,
            limits,
            metrics,
            concurrency,
        } = setup;
        let mut store = stores.make(G::engine(pre));
        let (link, ends) = Link::new(hub, limits);
        let attachment = &mut store.data_mut().attachment;
        attachment.hub = Some(Arc::clone(hub));
        attachment.link = Some(link);
        store.data_mut().deadline = Instant::now() + timeout;
        refuel(&mut store);
        let failed = |error: wasmtime::Error| Refused::Failed(format!("{error:#}"));
        let guest = G::instantiate(pre, &mut store).await.map_err(|error| {
            if is_pool_full(&error) {
                metrics.refused.inc();
                Refused::Saturated("the instance pool".into())
            } else {
                failed(error)
            }
        })?;
        let request = Request {
            method: opening.method,
            path_with_query: opening.path_with_query,
            headers: opening.headers,
        };
        let answer = guest.accept(&mut store, &request).await;
        let refused = match answer {
            Ok(Ok(())) => None,
            Ok(Err(Refusal { status, reason })) => Some(Refused::ByGuest(status, reason)),
            Err(error) => Some(failed(error)),
        };
        if let Some(refused) = refused {
            // It may have subscribed before it said no.
            hub.leave(ends.id);
            metrics.refused.inc();
            return Err(refused);
        }
        metrics.streams_open.inc();
        let open = Open {
            hub: Arc::clone(hub),
            id: ends.id,
            metrics: Arc::clone(metrics),
            _concurrency: concurrency,
        };
        Ok(Self {
            calls: Calls {
                store,
                guest,
                timeout,
                handler: Arc::clone(&stores.handler),
            },
            outbox: ends.outbox,
            inbox: ends.inbox,
            ending: ends.ending,
            limits: limits.clone(),
            metrics: Arc::clone(metrics),
            open,
        })
    }
}

impl<G> Calls<G> {
    /// The handler the guest belongs to, for logs.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// Restarts the deadline the epoch callback enforces, for one guest call.
    pub(super) fn arm_deadline(&mut self) {
        self.store.data_mut().deadline = Instant::now() + self.timeout;
        refuel(&mut self.store);
    }
}

/// `call`, stopped at `timeout` even when the guest is blocked in a host
/// call, where the epoch deadline cannot reach it.
pub(super) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::format_err!("the guest ran past its time limit")),
    }
}

/// Instantiates a stream guest once, so a component that cannot be
/// instantiated is rejected at load rather than at its first connection.
pub(super) async fn trial<G: StreamGuest>(
    pre: &G::Pre,
    stores: &StoreMaker,
) -> wasmtime::Result<()> {
    let mut store = stores.make(G::engine(pre));
    store.data_mut().deadline = Instant::now() + INSTANTIATE_LIMIT;
    G::instantiate(pre, &mut store).await.map(drop)
}

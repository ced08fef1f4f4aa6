//! The gateway's shared state, built once and passed down (no statics).
//!
//! Invariant: there is one [`App`] per running gateway; everything a
//! connection or request needs is reachable from it.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::{GatewaySettings, ListenerLimits};
use crate::control::drain::Drain;
use crate::control::live::{Live, Snapshot};
use crate::control::metrics::Metrics;
use crate::edge::acme::AcmeState;
use crate::guest::pubsub::Hub;
use crate::guest::{CompileCache, GuestEngine, OutboundClient};
use crate::http::upgrade::StreamSlots;

/// Shared state of a running gateway.
pub struct App {
    /// The snapshot requests are served from.
    pub live: Live,
    /// The process-wide wasmtime engine.
    pub engine: Arc<GuestEngine>,
    /// Every Prometheus collector.
    pub metrics: Arc<Metrics>,
    /// The pooled client for guests' outbound requests.
    pub outbound: Arc<OutboundClient>,
    /// Compiled components on disk, if enabled.
    pub cache: Option<Arc<CompileCache>>,
    /// Gateway-wide settings.
    pub settings: GatewaySettings,
    /// Graceful shutdown.
    pub drain: Drain,
    /// Pub/sub between stream connections, across generations.
    pub hub: Arc<Hub>,
    /// Open WebSocket and SSE streams per route.
    pub stream_slots: StreamSlots,
    /// Certificates obtained through ACME and the challenges in flight.
    pub acme: Arc<AcmeState>,
}

impl App {
    /// Assembles the state around a first snapshot.
    pub fn new(
        engine: Arc<GuestEngine>,
        metrics: Arc<Metrics>,
        outbound: Arc<OutboundClient>,
        cache: Option<Arc<CompileCache>>,
        settings: GatewaySettings,
        snapshot: Snapshot,
        acme: Arc<AcmeState>,
    ) -> Self {
        Self {
            live: Live::from_pointee(snapshot),
            engine,
            metrics,
            outbound,
            cache,
            settings,
            drain: Drain::new(),
            hub: Arc::default(),
            stream_slots: StreamSlots::default(),
            acme,
        }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder of a listener, under its limits.
pub fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        // Also how long an idle keep-alive connection waits for its next request.
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    // RFC 8441, so browsers can open WebSockets over an HTTP/2 connection.
    http.http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    http
}

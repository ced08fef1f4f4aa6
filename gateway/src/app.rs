//! The gateway's shared state, built once and passed down (no statics).
//!
//! Invariant: there is one [`App`] per running gateway; everything a
//! connection or request needs is reachable from it. It only holds state:
//! nothing it imports imports it.
//!
//! # What survives a hot swap
//!
//! A reload publishes a new [`Snapshot`] (routes, handlers, TLS
//! configurations) into [`App::live`]; requests and streams already running
//! keep the generation they started with. Some state must outlive
//! generations, because the old version's connections are still open:
//!
//! - the pub/sub [`Hub`] ([`App::hub`]): subscribers of every generation
//!   hear each other (and, in a cluster, every node's);
//! - the stream slots ([`App::stream_slots`]): a route's open WebSocket and
//!   SSE connections count against its limit, and all of them against the
//!   instances streams may hold, across swaps (a changed limit starts a new
//!   count);
//! - a handler's concurrency permits: carried to its next version by
//!   [`crate::guest::Handler::start`] while `limits.concurrency` is unchanged;
//! - the deployment state ([`App::deployments`]): a handler's candidate,
//!   its history and its warm previous version belong to the handler, not
//!   to a generation;
//! - the compile cache ([`App::cache`]) and ACME certificates
//!   ([`App::acme`]): a re-dropped or rolled-back component is mapped, not
//!   recompiled, and certificates are never re-ordered because of a reload.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::GatewaySettings;
use crate::control::drain::Drain;
use crate::control::live::{Live, Snapshot};
use crate::control::metrics::Metrics;
use crate::deploy::Deployments;
use crate::edge::acme::AcmeState;
use crate::guest::pubsub::Hub;
use crate::guest::{CompileCache, GuestEngine, OutboundClient};
use crate::http::stream_slots::StreamSlots;

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
    /// Components' channel subscriptions, kept to the live generation's.
    pub channels: crate::guest::channel::Channels,
    /// Resident components, kept to the live generation's and supervised.
    pub residents: crate::guest::resident::Residents,
    /// Open WebSocket and SSE streams per route.
    pub stream_slots: StreamSlots,
    /// Certificates obtained through ACME and the challenges in flight.
    pub acme: Arc<AcmeState>,
    /// Versions, candidates and the audit trail, across generations.
    pub deployments: Arc<Deployments>,
    /// This node's membership in a cluster (`[cluster]`), if any.
    pub cluster: Option<Cluster>,
}

/// The long-lived parts a gateway is assembled from, made at start-up.
pub struct Parts {
    /// The process-wide wasmtime engine.
    pub engine: Arc<GuestEngine>,
    /// Every Prometheus collector.
    pub metrics: Arc<Metrics>,
    /// The pooled client for guests' outbound requests.
    pub outbound: Arc<OutboundClient>,
    /// Compiled components on disk, if enabled.
    pub cache: Option<Arc<CompileCache>>,
    /// Certificates obtained through ACME.
    pub acme: Arc<AcmeState>,
    /// Versions, candidates and the audit trail.
    pub deployments: Arc<Deployments>,
    /// Pub/sub, already relayed to the cluster when there is one.
    pub hub: Arc<Hub>,
    /// This node's membership in a cluster, if any.
    pub cluster: Option<Cluster>,
}

impl App {
    /// Assembles the state around a first snapshot.
    pub fn new(parts: Parts, settings: GatewaySettings, snapshot: Snapshot) -> Self {
        let Parts {
            engine,
            metrics,
            outbound,
            cache,
            acme,
            deployments,
            hub,
            cluster,
        } = parts;
        Self {
            live: Live::from_pointee(snapshot),
            engine,
            metrics,
            outbound,
            cache,
            stream_slots: StreamSlots::new(settings.stream_instances()),
            settings,
            drain: Drain::new(),
            hub,
            channels: crate::guest::channel::Channels::default(),
            residents: crate::guest::resident::Residents::default(),
            acme,
            deployments,
            cluster,
        }
    }
}

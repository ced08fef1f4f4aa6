//! Cluster mode: gateways that share one NATS server act as one. For
//! pub/sub, each node relays the publications made on it (by WebSocket and
//! SSE guests, channel routes, residents) to `NAME.pubsub` and delivers the
//! ones the other nodes relay to its own subscribers. For deployments, it
//! holds what the nodes share in JetStream ([`shared`]) and their
//! per-version counts ([`tallies`]); applying them is `control`'s job.
//!
//! Invariant: local delivery never waits for NATS. A publication reaches
//! this node's subscribers first, then is offered to a bounded queue; while
//! NATS is away (or the queue is full) the other nodes miss it, counted in
//! `wasmgate_cluster_messages_total{direction="out",outcome="dropped"}`,
//! and the node reconnects on its own. Each publication reaches each node
//! once: the client asks NATS not to echo its own messages back, and one
//! that names this node anyway is ignored.

pub mod shared;
pub mod tallies;
mod wire;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{Notify, mpsc};

use crate::config::{ClusterSettings, HandlerName};
use crate::control::metrics::Metrics;
use crate::guest::pubsub::{Hub, Relay, Relayed};

/// Publications that may wait for NATS before the next is dropped.
const QUEUE: usize = 1024;
/// The longest wait between two attempts to reach NATS.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// This node's membership in a cluster.
pub struct Cluster {
    settings: ClusterSettings,
    connected: Arc<AtomicBool>,
    client: async_nats::Client,
    /// Whether this node has caught up with the shared deployment state.
    synced: AtomicBool,
    /// The last decision this node has read.
    revision: AtomicU64,
    /// Handlers whose state this node decided and has yet to share.
    decided: Mutex<BTreeSet<HandlerName>>,
    deciding: Notify,
    /// The other nodes' per-version counts.
    pub tallies: Arc<tallies::Tallies>,
}

/// What `/status` says about the cluster.
#[derive(Debug, serde::Serialize)]
pub struct ClusterStatus {
    /// The NATS server's URL.
    pub nats: String,
    /// The cluster's name.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// Whether this node reaches NATS now (when not, it serves alone).
    pub connected: bool,
    /// Whether it has caught up with the shared deployment state.
    pub synced: bool,
    /// The last shared decision it has read.
    pub revision: u64,
}

impl Cluster {
    /// Joins the cluster `settings` names: connects to NATS in the
    /// background (a node whose NATS is down starts, serves, and keeps
    /// trying), relays `hub`'s publications and delivers the other nodes'.
    pub async fn join(
        settings: &ClusterSettings,
        hub: &Arc<Hub>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let connected = Arc::new(AtomicBool::new(false));
        let gauge = metrics
            .cluster_connected
            .with_label_values(&[settings.node.as_str()]);
        gauge.set(0);
        let watch = {
            let connected = Arc::clone(&connected);
            let node = settings.node.clone();
            move |event: async_nats::Event| {
                let connected = Arc::clone(&connected);
                let gauge = gauge.clone();
                let node = node.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.store(true, Ordering::Release);
                            gauge.set(1);
                            tracing::info!(node, "cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Ordering::Release);
                            gauge.set(0);
                            tracing::warn!(
                                node,
                                "cluster: NATS unreachable; serving alone, reconnecting"
                            );
                        }
                        other => tracing::debug!(node, "cluster: NATS {other}"),
                    }
                }
            }
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("wasmgate {}", settings.node))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts as u64).min(MAX_BACKOFF)
            })
            .event_callback(watch)
            .connect(settings.nats.as_str())
            .await
            .map_err(|error| format!("cluster.nats {}: {error}", settings.nats))?;
        let subject = wire::subject(&settings.name);
        let arriving = client
            .subscribe(subject.clone())
            .await
            .map_err(|error| format!("subscribing to {subject}: {error}"))?;
        let (queue, leaving) = mpsc::channel(QUEUE);
        let out = |outcome: &str| {
            metrics
                .cluster_messages
                .with_label_values(&["out", outcome])
        };
        hub.relay_to(Relay {
            queue,
            dropped: out("dropped"),
        });
        let reports = client
            .subscribe(tallies::subject(&settings.name))
            .await
            .map_err(|error| format!("subscribing to the metrics reports: {error}"))?;
        let tallies = Arc::new(tallies::Tallies::default());
        tokio::spawn(hear_reports(
            reports,
            Arc::clone(&tallies),
            settings.node.clone(),
        ));
        tokio::spawn(send(
            Sender {
                client: client.clone(),
                subject,
                node: settings.node.clone(),
                connected: Arc::clone(&connected),
                sent: out("sent"),
                dropped: out("dropped"),
            },
            leaving,
        ));
        let into = |outcome: &str| metrics.cluster_messages.with_label_values(&["in", outcome]);
        tokio::spawn(receive(
            arriving,
            Arc::clone(hub),
            settings.node.clone(),
            into("delivered"),
            into("refused"),
        ));
        Ok(Self {
            settings: settings.clone(),
            connected,
            client,
            synced: AtomicBool::new(false),
            revision: AtomicU64::new(0),
            decided: Mutex::new(BTreeSet::new()),
            deciding: Notify::new(),
            tallies,
        })
    }

    /// What `/status` shows.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            nats: self.settings.nats.clone(),
            name: self.settings.name.clone(),
            node: self.settings.node.clone(),
            connected: self.connected.load(Ordering::Acquire),
            synced: self.is_synced(),
            revision: self.revision.load(Ordering::Acquire),
        }
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// Whether this node has caught up with the shared deployment state
    /// since it started (`/readyz` waits for it).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Records that this node has read every decision up to `revision`;
    /// `caught_up` once nothing older is waiting.
    pub fn read_up_to(&self, revision: u64, caught_up: bool) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
        if caught_up && !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!(
                node = self.settings.node,
                revision,
                "cluster: caught up with the shared deployment state"
            );
        }
    }

    /// Notes that this node decided what `handler` serves (a deploy, a
    /// step, a promotion, a rollback), for the other nodes to apply.
    pub fn decided(&self, handler: &HandlerName) {
        self.lock_decided().insert(handler.clone());
        self.deciding.notify_one();
    }

    /// Waits for decisions to share; the handlers, each once however many
    /// times it changed meanwhile.
    pub async fn next_decided(&self) -> Vec<HandlerName> {
        loop {
            let handlers: Vec<HandlerName> = std::mem::take(&mut *self.lock_decided())
                .into_iter()
                .collect();
            if !handlers.is_empty() {
                return handlers;
            }
            self.deciding.notified().await;
        }
    }

    /// Publishes this node's per-version counts for the others.
    pub async fn report(&self, report: &tallies::Report) {
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        let Ok(payload) = serde_json::to_vec(report) else {
            return;
        };
        let subject = tallies::subject(&self.settings.name);
        if let Err(error) = self.client.publish(subject, payload.into()).await {
            tracing::debug!(
                node = self.settings.node,
                "cluster: metrics not reported: {error}"
            );
        }
    }

    fn lock_decided(&self) -> std::sync::MutexGuard<'_, BTreeSet<HandlerName>> {
        self.decided
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps the other nodes' metrics reports.
async fn hear_reports(
    mut reports: async_nats::Subscriber,
    tallies: Arc<tallies::Tallies>,
    node: String,
) {
    while let Some(message) = reports.next().await {
        if let Err(reason) = tallies.heard(&message.payload) {
            tracing::debug!(node, "cluster: {reason}");
        }
    }
}

/// What the sending task needs.
struct Sender {
    client: async_nats::Client,
    subject: String,
    node: String,
    connected: Arc<AtomicBool>,
    sent: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
}

/// Sends this node's publications to the others while NATS is reachable;
/// drops (and counts) them while it is not, rather than deliver them late.
async fn send(sender: Sender, mut leaving: mpsc::Receiver<Relayed>) {
    while let Some(relayed) = leaving.recv().await {
        if !sender.connected.load(Ordering::Acquire) {
            sender.dropped.inc();
            continue;
        }
        let Some((headers, payload)) = wire::encode(&sender.node, &relayed) else {
            sender.dropped.inc();
            continue;
        };
        match sender
            .client
            .publish_with_headers(sender.subject.clone(), headers, payload)
            .await
        {
            Ok(()) => sender.sent.inc(),
            Err(error) => {
                // Larger than the server's max_payload, or the client closed.
                tracing::debug!(node = sender.node, "cluster: not relayed: {error}");
                sender.dropped.inc();
            }
        }
    }
}

/// Delivers the other nodes' publications to this node's subscribers.
async fn receive(
    mut arriving: async_nats::Subscriber,
    hub: Arc<Hub>,
    node: String,
    delivered: prometheus::IntCounter,
    refused: prometheus::IntCounter,
) {
    while let Some(message) = arriving.next().await {
        match wire::decode(message.headers.as_ref(), &message.payload) {
            Ok(arrived) if arrived.node == node => {}
            Ok(arrived) => {
                hub.deliver(&arrived.key, &arrived.published);
                delivered.inc();
            }
            Err(reason) => {
                refused.inc();
                tracing::debug!(node, "cluster: a message refused: {reason}");
            }
        }
    }
}

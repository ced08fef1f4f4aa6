//! Cluster mode: gateways that share one NATS server act as one for
//! pub/sub. Each node relays the publications made on it (by WebSocket and
//! SSE guests, channel routes, residents) to `NAME.pubsub` and delivers the
//! ones the other nodes relay to its own subscribers.
//!
//! Invariant: local delivery never waits for NATS. A publication reaches
//! this node's subscribers first, then is offered to a bounded queue; while
//! NATS is away (or the queue is full) the other nodes miss it, counted in
//! `wasmgate_cluster_messages_total{direction="out",outcome="dropped"}`,
//! and the node reconnects on its own. Each publication reaches each node
//! once: the client asks NATS not to echo its own messages back, and one
//! that names this node anyway is ignored.

mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;

use crate::config::ClusterSettings;
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
        let dropped = out("dropped");
        hub.relay_to(Relay {
            queue,
            dropped: dropped.clone(),
        });
        tokio::spawn(send(
            Sender {
                client,
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
        })
    }

    /// What `/status` shows.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            nats: self.settings.nats.clone(),
            name: self.settings.name.clone(),
            node: self.settings.node.clone(),
            connected: self.connected.load(Ordering::Acquire),
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

//! `[cluster]`: the NATS server a node joins the others through, the
//! cluster's name (the first token of its subjects) and this node's name.

use super::super::ClusterSettings;
use super::super::raw;
use super::Checker;

/// The longest cluster or node name.
const MAX_NAME: usize = ClusterSettings::MAX_NAME;

impl Checker<'_> {
    /// The cluster settings, or `None` with a problem per bad key.
    pub(super) fn cluster(&mut self, raw: raw::RawCluster) -> Option<ClusterSettings> {
        let mut ok = true;
        let reason = match raw.nats.parse::<async_nats::ServerAddr>() {
            Err(error) => Some(error.to_string()),
            Ok(addr) if addr.host().is_empty() => Some("it names no host".to_string()),
            Ok(addr) if addr.is_websocket() => {
                Some("a node speaks NATS over TCP, not WebSocket".to_string())
            }
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            self.problems.push(
                "cluster.nats",
                format!(
                    "`{}` is not a NATS server URL (nats://host:port): {reason}",
                    raw.nats
                ),
            );
            ok = false;
        }
        let name = raw.name.unwrap_or_else(|| "wasmgate".to_string());
        let token = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(token) {
            self.problems.push(
                "cluster.name",
                format!("`{name}` must be 1 to {MAX_NAME} letters, digits, `-` or `_` (it starts every NATS subject the cluster uses)"),
            );
            ok = false;
        }
        let node = raw.node.unwrap_or_else(default_node);
        if !ClusterSettings::is_node_name(&node) {
            self.problems.push(
                "cluster.node",
                format!("`{node}` must be 1 to {MAX_NAME} visible ASCII characters"),
            );
            ok = false;
        }
        ok.then_some(ClusterSettings {
            nats: raw.nats,
            name,
            node,
        })
    }
}

/// The host's name (a pod's name under Kubernetes) and the process id.
fn default_node() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty() && host.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "node".to_string());
    let mut node = format!("{host}-{}", std::process::id());
    node.truncate(MAX_NAME);
    node
}

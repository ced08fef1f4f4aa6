//! The cluster's per-version request counts: every node reports its own
//! readings of the versions rolling out on `NAME.metrics` each second, and
//! keeps the latest report of every other node, so the node driving a
//! canary judges it on the whole cluster's traffic.
//!
//! Invariant: a report is bounded (versions, buckets, nodes kept) and one
//! that breaks a bound or does not parse is refused whole; readings are
//! cumulative, so a late or lost report only delays what the sum shows.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::deploy::judge::Tally;

/// The most versions one report may carry.
pub(crate) const MAX_VERSIONS: usize = 256;
/// The most latency buckets one reading may carry.
const MAX_BUCKETS: usize = 64;
/// The most other nodes whose reports are kept.
const MAX_NODES: usize = 1024;

/// The subject reports go to.
pub fn subject(cluster: &str) -> String {
    format!("{cluster}.metrics")
}

/// One node's readings.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// (handler, version SHA-256, reading).
    pub versions: Vec<(String, String, Tally)>,
}

/// One node's readings by (handler, version).
type Readings = HashMap<(String, String), Tally>;

/// The latest readings of every other node.
#[derive(Default)]
pub struct Tallies {
    nodes: Mutex<HashMap<String, Readings>>,
}

impl Tallies {
    /// Keeps a report from another node, or says why it is refused.
    pub fn heard(&self, payload: &[u8]) -> Result<(), String> {
        let report: Report = serde_json::from_slice(payload)
            .map_err(|error| format!("a metrics report: {error}"))?;
        if report.versions.len() > MAX_VERSIONS {
            return Err(format!(
                "a metrics report of {} versions (at most {MAX_VERSIONS})",
                report.versions.len()
            ));
        }
        if report
            .versions
            .iter()
            .any(|(_, _, tally)| tally.buckets.len() > MAX_BUCKETS)
        {
            return Err(format!("a reading of more than {MAX_BUCKETS} buckets"));
        }
        let mut nodes = self.lock();
        if nodes.len() >= MAX_NODES && !nodes.contains_key(&report.node) {
            return Err(format!("reports from more than {MAX_NODES} nodes"));
        }
        let readings = report
            .versions
            .into_iter()
            .map(|(handler, sha, tally)| ((handler, sha), tally))
            .collect();
        nodes.insert(report.node, readings);
        Ok(())
    }

    /// The other nodes' readings of `handler`'s version `sha`, summed.
    pub fn others(&self, handler: &str, sha: &str) -> Tally {
        let mut sum = Tally::default();
        let key = (handler.to_string(), sha.to_string());
        for readings in self.lock().values() {
            if let Some(tally) = readings.get(&key) {
                sum.add(tally);
            }
        }
        sum
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Readings>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, requests: u64) -> Vec<u8> {
        let tally = Tally {
            requests,
            errors: 1,
            buckets: vec![(0.1, requests)],
        };
        serde_json::to_vec(&Report {
            node: node.into(),
            versions: vec![("hello".into(), "ab".into(), tally)],
        })
        .expect("serializes")
    }

    #[test]
    fn the_latest_report_of_each_node_is_summed() {
        let tallies = Tallies::default();
        tallies.heard(&report("b", 10)).expect("kept");
        tallies.heard(&report("c", 5)).expect("kept");
        tallies.heard(&report("b", 20)).expect("kept");
        let sum = tallies.others("hello", "ab");
        assert_eq!((sum.requests, sum.errors), (25, 2));
        assert_eq!(sum.buckets, vec![(0.1, 25)]);
        assert_eq!(tallies.others("hello", "cd"), Tally::default());
    }

    #[test]
    fn reports_out_of_bounds_are_refused() {
        let tallies = Tallies::default();
        assert!(tallies.heard(b"not json").is_err());
        let huge = Report {
            node: "b".into(),
            versions: (0..=MAX_VERSIONS)
                .map(|i| ("h".into(), i.to_string(), Tally::default()))
                .collect(),
        };
        let huge = serde_json::to_vec(&huge).expect("serializes");
        assert!(tallies.heard(&huge).is_err());
        let wide = Report {
            node: "b".into(),
            versions: vec![(
                "h".into(),
                "ab".into(),
                Tally {
                    buckets: vec![(1.0, 1); MAX_BUCKETS + 1],
                    ..Tally::default()
                },
            )],
        };
        assert!(
            tallies
                .heard(&serde_json::to_vec(&wide).expect("json"))
                .is_err()
        );
        assert_eq!(tallies.others("h", "ab"), Tally::default());
    }
}

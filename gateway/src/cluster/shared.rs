//! Shared deployment state in JetStream: for each handler, the decision of
//! what it serves (its stable version and its candidate's share), in the
//! key-value bucket `NAME_deployments` keyed by handler; and the components
//! those decisions name, in the object store `NAME_components` keyed by
//! SHA-256. One node decides (where the operator deployed); every node,
//! that one included, reads the decisions in order.
//!
//! Invariant: a decision is written only after every component it names is
//! in the object store, so whoever reads it can fetch them; a fetched
//! component is refused unless it fits [`MAX_COMPONENT_SIZE`], arrives in
//! time and its bytes hash to its name. Signatures are checked where it is
//! loaded, as for any other version.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use crate::config::HandlerName;
use crate::guest::ComponentFile;
use crate::guest::component::MAX_COMPONENT_SIZE;

/// The least time a component's bytes get to arrive (then 1 s per MiB).
const FETCH_START: Duration = Duration::from_secs(5);

/// What one handler serves, as decided by `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The node that decided it (it does not apply its own decisions again).
    pub node: String,
    /// The stable version; `None`: whatever the configured file holds.
    pub stable: Option<String>,
    /// The version rolling out beside it, if any.
    pub candidate: Option<SharedCandidate>,
}

/// A candidate as every node serves it: driven on the deciding node only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCandidate {
    /// Its content hash.
    pub sha256: String,
    /// The name pins use.
    pub name: String,
    /// Its share, in basis points.
    pub weight: u32,
}

impl Decision {
    /// Whether it is one a node could have written: a node name as the
    /// config allows, versions as SHA-256 hex, a candidate's name as the
    /// admin API allows and its share at most 100%.
    fn check(&self) -> Result<(), String> {
        if !crate::config::ClusterSettings::is_node_name(&self.node) {
            return Err("its node is not a node name".into());
        }
        if let Some(sha) = self.versions().find(|sha| {
            sha.len() != 64
                || !sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }) {
            return Err(format!("`{}` is not a SHA-256", sha.escape_debug()));
        }
        if let Some(candidate) = &self.candidate {
            crate::config::deploy::check_version_name(&candidate.name)?;
            if candidate.weight > crate::config::deploy::FULL {
                return Err(format!("a share of {} basis points", candidate.weight));
            }
        }
        Ok(())
    }

    /// The versions it names.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.stable
            .as_deref()
            .into_iter()
            .chain(self.candidate.as_ref().map(|c| c.sha256.as_str()))
    }
}

/// Why a component could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// It will not do: missing, too large, or not what its name says.
    #[error("{0}")]
    Refused(String),
    /// NATS did not answer in time or the connection broke: worth trying
    /// again.
    #[error("{0}")]
    Unreachable(String),
}

/// An entry read from the bucket.
#[derive(Debug)]
pub struct Decided {
    /// The handler and what was decided for it, or why the entry is not a
    /// decision (it is skipped, and the reading goes on).
    pub decision: Result<(HandlerName, Decision), String>,
    /// Its place in the bucket's order.
    pub revision: u64,
    /// How many later entries were already waiting when this one was
    /// read (0: this node has caught up).
    pub pending: u64,
}

/// The bucket and the object store of one cluster.
#[derive(Clone)]
pub struct Shared {
    decisions: kv::Store,
    components: object_store::ObjectStore,
}

impl Shared {
    /// Opens (creating them the first time) the cluster `name`'s bucket and
    /// object store; fails while JetStream is out of reach.
    pub async fn open(client: &async_nats::Client, name: &str) -> Result<Self, String> {
        let js = jetstream::new(client.clone());
        let bucket = format!("{name}_deployments");
        let decisions = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => {
                // The bucket's stream as the key-value layout (ADR-8) has
                // it, created directly: async-nats' `create_key_value`
                // first reads the account's info, which it cannot parse
                // from nats-server 2.9 (Debian 12's), and uses nothing of it
                // for a bucket like this one.
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("wasmgate: what each handler serves".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    storage: jetstream::stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|error| format!("key-value bucket {bucket}: {error}"))?;
                js.get_key_value(&bucket)
                    .await
                    .map_err(|error| format!("key-value bucket {bucket}: {error}"))?
            }
        };
        let objects = format!("{name}_components");
        let components = match js.get_object_store(&objects).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: objects.clone(),
                    description: Some("wasmgate: components by SHA-256".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|error| format!("object store {objects}: {error}"))?,
        };
        Ok(Self {
            decisions,
            components,
        })
    }

    /// Uploads component `sha256` from `path` unless it is there already.
    pub async fn offer(&self, sha256: &str, path: PathBuf) -> Result<(), String> {
        if self.components.info(sha256).await.is_ok() {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|error| format!("{}: {error}", path.display()))?;
        self.components
            .put(sha256, &mut file)
            .await
            .map(drop)
            .map_err(|error| format!("uploading {}: {error}", crate::deploy::short(sha256)))
    }

    /// Downloads component `sha256`, refusing one too large or whose bytes
    /// are not what its name says.
    pub async fn fetch(&self, sha256: &str) -> Result<ComponentFile, FetchError> {
        let short = crate::deploy::short(sha256);
        let unreachable = |error: &dyn std::fmt::Display| {
            FetchError::Unreachable(format!("fetching {short}: {error}"))
        };
        let info = self.components.info(sha256).await.map_err(|error| {
            if error.kind() == object_store::InfoErrorKind::NotFound {
                FetchError::Refused(format!("{short} is not in the cluster's object store"))
            } else {
                unreachable(&error)
            }
        })?;
        if info.size as u64 > MAX_COMPONENT_SIZE {
            return Err(FetchError::Refused(format!(
                "{short} is {} bytes, too large",
                info.size
            )));
        }
        // An object's description may promise chunks that never come (a
        // broken upload, or anyone on the server writing one): the bytes
        // must arrive at 1 MiB/s or better, after a 5 s start.
        let limit = FETCH_START + Duration::from_secs(info.size as u64 >> 20);
        let read = async {
            let object = self
                .components
                .get(sha256)
                .await
                .map_err(|error| unreachable(&error))?;
            let mut bytes = Vec::with_capacity(info.size);
            object
                .take(MAX_COMPONENT_SIZE + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|error| unreachable(&error))?;
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(limit, read).await.map_err(|_| {
            FetchError::Refused(format!(
                "{short}'s bytes did not arrive within {limit:?} ({} bytes announced)",
                info.size
            ))
        })??;
        let file = ComponentFile::from_bytes(bytes)
            .map_err(|error| FetchError::Refused(format!("{short}: {error}")))?;
        if file.hash.as_str() != sha256 {
            return Err(FetchError::Refused(format!(
                "{short}: the object store's bytes hash to {}",
                file.hash
            )));
        }
        Ok(file)
    }

    /// Writes `handler`'s decision; its revision.
    pub async fn decide(&self, handler: &HandlerName, decision: &Decision) -> Result<u64, String> {
        let value = serde_json::to_vec(decision).map_err(|error| error.to_string())?;
        self.decisions
            .put(handler.as_str(), value.into())
            .await
            .map_err(|error| format!("writing {handler}'s decision: {error}"))
    }

    /// Whether the bucket holds no decision yet.
    pub async fn is_empty(&self) -> Result<bool, String> {
        let status = self
            .decisions
            .status()
            .await
            .map_err(|error| error.to_string())?;
        Ok(status.values() == 0)
    }

    /// Every handler's latest decision, then each new one as it is made;
    /// from `after` on when given (resuming after a lost connection).
    pub async fn watch(
        &self,
        after: Option<u64>,
    ) -> Result<impl futures::Stream<Item = Result<Decided, String>> + use<>, String> {
        let watch = match after {
            Some(revision) => self.decisions.watch_all_from_revision(revision + 1).await,
            None => self.decisions.watch_with_history(">").await,
        }
        .map_err(|error| format!("watching the decisions: {error}"))?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(|error| error.to_string())?;
            Ok(Decided {
                decision: decode(&entry.key, &entry.value, entry.operation),
                revision: entry.revision,
                pending: entry.delta,
            })
        }))
    }
}

/// A decision's value, checked: a key that is no handler name, a deleted
/// key or a value that is not a decision is refused with why.
fn decode(
    key: &str,
    value: &[u8],
    operation: kv::Operation,
) -> Result<(HandlerName, Decision), String> {
    let handler =
        HandlerName::parse(key).ok_or_else(|| format!("`{key}` is not a handler name"))?;
    if operation != kv::Operation::Put {
        return Err(format!("{key}'s decision was removed"));
    }
    let decision: Decision =
        serde_json::from_slice(value).map_err(|error| format!("{key}'s decision: {error}"))?;
    decision
        .check()
        .map_err(|reason| format!("{key}'s decision: {reason}"))?;
    Ok((handler, decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reads_back_as_written() {
        let decision = Decision {
            node: "a".into(),
            stable: Some("ab".repeat(32)),
            candidate: Some(SharedCandidate {
                sha256: "cd".repeat(32),
                name: "canary".into(),
                weight: 500,
            }),
        };
        let value = serde_json::to_vec(&decision).expect("serializes");
        assert_eq!(
            decode("hello", &value, kv::Operation::Put)
                .expect("decodes")
                .1,
            decision
        );
        assert_eq!(decision.versions().count(), 2);
    }

    #[test]
    fn what_is_not_a_decision_is_refused() {
        let value = br#"{"node":"a","stable":null,"candidate":null}"#;
        let sha = "ab".repeat(32);
        for bad in [
            r#"{"node":"","stable":null,"candidate":null}"#.to_string(),
            "{\"node\":\"a\\nb\",\"stable\":null,\"candidate\":null}".to_string(),
            r#"{"node":"a","stable":"../../etc","candidate":null}"#.to_string(),
            format!(
                r#"{{"node":"a","stable":null,"candidate":{{"sha256":"{sha}","name":"Bad Name","weight":1}}}}"#
            ),
            format!(
                r#"{{"node":"a","stable":null,"candidate":{{"sha256":"{sha}","name":"b","weight":10001}}}}"#
            ),
        ] {
            assert!(
                decode("hello", bad.as_bytes(), kv::Operation::Put).is_err(),
                "{bad}"
            );
        }
        assert!(decode("Not A Name", value, kv::Operation::Put).is_err());
        assert!(decode("hello", value, kv::Operation::Delete).is_err());
        assert!(decode("hello", b"[1,2]", kv::Operation::Put).is_err());
        assert!(decode("hello", value, kv::Operation::Put).is_ok());
    }
}

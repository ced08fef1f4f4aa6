//! The version store: every component version a handler has served, kept by
//! content hash with when and how it arrived, and the handler's deployment
//! state (its stable and previous versions, the file's last hash), under
//! `[deploy] state_dir`.
//!
//! Invariant: a stored component is written once under its SHA-256 and
//! never changed (written aside, then renamed); a handler's history is
//! replaced whole (written aside, then renamed) and lists at most
//! `keep_versions` versions besides the ones it names as stable, previous
//! or current file, whose components are never pruned. Without a state
//! directory the same state lives in memory only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::HandlerName;
use crate::private_files::{self, Unsafe};

/// One version a handler has served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The component's SHA-256, hex.
    pub sha256: String,
    /// When it first arrived (RFC 3339).
    pub arrived: String,
    /// How: `file` (dropped or configured), `deploy` (the admin API).
    pub source: String,
    /// Its size in bytes.
    pub size: u64,
    /// The key that signed it, when signatures are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// A handler's deployment state, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The version serving all traffic not given to a candidate; `None`:
    /// whatever the configured file holds.
    pub stable: Option<String>,
    /// The version stable replaced, for `rollback`.
    pub previous: Option<String>,
    /// The configured file's hash when it was last taken in, so that an
    /// unchanged file never overrides a deploy or a rollback.
    pub file: Option<String>,
    /// Versions served, oldest first.
    pub versions: Vec<VersionRecord>,
}

impl History {
    /// The version whose hash starts with `prefix` (at least 6 hex digits),
    /// if exactly one does.
    pub fn find(&self, prefix: &str) -> Result<&VersionRecord, String> {
        if prefix.len() < 6 {
            return Err(format!(
                "`{prefix}`: give at least 6 hex digits of the version"
            ));
        }
        let mut matching = self
            .versions
            .iter()
            .filter(|version| version.sha256.starts_with(prefix));
        match (matching.next(), matching.next()) {
            (Some(version), None) => Ok(version),
            (None, _) => Err(format!("no version {prefix} in this handler's history")),
            (Some(_), Some(_)) => Err(format!("`{prefix}` names more than one version")),
        }
    }
}

/// Handler histories and their components.
pub struct VersionStore {
    dir: Option<PathBuf>,
    keep: usize,
    histories: Mutex<HashMap<HandlerName, History>>,
}

/// The most a history file may hold; one is a few hundred bytes per version.
const MAX_HISTORY_FILE: u64 = 4 << 20;

impl VersionStore {
    /// Opens (creating it owner-only) the store in `dir`, or an in-memory
    /// one when there is none.
    pub fn open(dir: Option<&Path>, keep: usize) -> Result<Self, String> {
        if let Some(dir) = dir {
            private_dir(dir)?;
        }
        Ok(Self {
            dir: dir.map(|dir| dir.join("versions")),
            keep,
            histories: Mutex::new(HashMap::new()),
        })
    }

    /// Whether versions outlive the process.
    pub fn is_persistent(&self) -> bool {
        self.dir.is_some()
    }

    fn handler_dir(&self, handler: &HandlerName) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(handler.as_str()))
    }

    /// Where the component `sha256` of `handler` is kept, if on disk.
    pub fn component(&self, handler: &HandlerName, sha256: &str) -> Option<PathBuf> {
        let path = self.handler_dir(handler)?.join(format!("{sha256}.wasm"));
        path.is_file().then_some(path)
    }

    /// `handler`'s state (read from disk the first time).
    pub fn history(&self, handler: &HandlerName) -> History {
        let mut histories = self.lock();
        histories
            .entry(handler.clone())
            .or_insert_with(|| self.load(handler))
            .clone()
    }

    /// Changes `handler`'s state and saves it; returns the new state.
    pub fn update(&self, handler: &HandlerName, change: impl FnOnce(&mut History)) -> History {
        let mut histories = self.lock();
        let history = histories
            .entry(handler.clone())
            .or_insert_with(|| self.load(handler));
        let before = history.clone();
        change(history);
        if *history != before {
            self.prune(handler, history);
            self.save(handler, history);
        }
        history.clone()
    }

    /// Writes `bytes` as component `sha256` of `handler` (once), so it can
    /// be loaded from here, without recording it as served yet.
    pub fn stage(&self, handler: &HandlerName, sha256: &str, bytes: &[u8]) -> Result<(), String> {
        if let Some(dir) = self.handler_dir(handler) {
            private_dir(&dir)?;
            let path = dir.join(format!("{sha256}.wasm"));
            if !path.is_file() {
                write_whole(&path, bytes)?;
            }
        }
        Ok(())
    }

    /// Removes a staged component that never served.
    pub fn discard(&self, handler: &HandlerName, sha256: &str) {
        let served = self
            .history(handler)
            .versions
            .iter()
            .any(|version| version.sha256 == sha256);
        if let (false, Some(dir)) = (served, self.handler_dir(handler)) {
            let _ = std::fs::remove_file(dir.join(format!("{sha256}.wasm")));
        }
    }

    /// Keeps `bytes` as a version of `handler` (once per hash) and records
    /// how it arrived.
    pub fn put(
        &self,
        handler: &HandlerName,
        sha256: &str,
        bytes: &[u8],
        source: &str,
        signed_by: Option<String>,
    ) -> Result<(), String> {
        self.stage(handler, sha256, bytes)?;
        self.record_signed(handler, sha256, bytes.len() as u64, source, signed_by);
        Ok(())
    }

    /// Records staged component `sha256` as a version `handler` serves.
    pub fn record(&self, handler: &HandlerName, sha256: &str, size: u64, source: &str) {
        self.record_signed(handler, sha256, size, source, None);
    }

    fn record_signed(
        &self,
        handler: &HandlerName,
        sha256: &str,
        size: u64,
        source: &str,
        signed_by: Option<String>,
    ) {
        self.update(handler, |history| {
            if !history.versions.iter().any(|v| v.sha256 == sha256) {
                history.versions.push(VersionRecord {
                    sha256: sha256.to_string(),
                    arrived: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        .to_string(),
                    source: source.to_string(),
                    size,
                    signed_by,
                });
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HandlerName, History>> {
        self.histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load(&self, handler: &HandlerName) -> History {
        use std::io::Read as _;
        let Some(path) = self
            .handler_dir(handler)
            .map(|dir| dir.join("history.json"))
        else {
            return History::default();
        };
        let mut text = String::new();
        let read = std::fs::File::open(&path)
            .and_then(|file| file.take(MAX_HISTORY_FILE).read_to_string(&mut text));
        match read {
            Ok(_) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::error!(path = %path.display(), "ignoring an unreadable version history: {error}");
                History::default()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => History::default(),
            Err(error) => {
                tracing::error!(path = %path.display(), "cannot read the version history: {error}");
                History::default()
            }
        }
    }

    fn save(&self, handler: &HandlerName, history: &History) {
        let Some(dir) = self.handler_dir(handler) else {
            return;
        };
        let saved = private_dir(&dir).and_then(|()| {
            let text = serde_json::to_vec_pretty(history).map_err(|error| error.to_string())?;
            write_whole(&dir.join("history.json"), &text)
        });
        if let Err(error) = saved {
            tracing::error!(
                handler = handler.as_str(),
                "cannot save the version history: {error}"
            );
        }
    }

    /// Drops the oldest versions past `keep`, except those the history names.
    fn prune(&self, handler: &HandlerName, history: &mut History) {
        let named = [&history.stable, &history.previous, &history.file];
        let is_named = |sha: &str| named.iter().any(|n| n.as_deref() == Some(sha));
        let unnamed = history
            .versions
            .iter()
            .filter(|version| !is_named(&version.sha256))
            .count();
        let mut excess = unnamed.saturating_sub(self.keep);
        let dir = self.handler_dir(handler);
        history.versions.retain(|version| {
            if excess == 0 || is_named(&version.sha256) {
                return true;
            }
            excess -= 1;
            if let Some(dir) = &dir {
                let _ = std::fs::remove_file(dir.join(format!("{}.wasm", version.sha256)));
            }
            false
        });
    }
}

/// Creates `dir` owner-only, or checks that an existing one is ours and
/// not writable by others (what is stored here gets run).
fn private_dir(dir: &Path) -> Result<(), String> {
    private_files::ensure_dir(dir).map_err(|problem| match problem {
        Unsafe::Io(error) => format!("{}: {error}", dir.display()),
        Unsafe::Owner(_) | Unsafe::Writable(_) => format!(
            "{}: owned by another user or writable by others",
            dir.display()
        ),
    })
}

/// Writes `bytes` to a new owner-only file beside `path`, then renames it
/// over `path`.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let staging = path.with_extension(format!("tmp{}", std::process::id()));
    // A staging file left by a process that died with this pid.
    let _ = std::fs::remove_file(&staging);
    private_files::replace(&staging, path, bytes)
        .map_err(|error| format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HandlerName {
        HandlerName::parse(text).expect("valid")
    }

    #[test]
    fn versions_survive_a_reopen_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().expect("dir");
        let api = name("api");
        let store = VersionStore::open(Some(dir.path()), 2).expect("opens");
        let first = format!("{:064}", 0);
        for n in 0..4u8 {
            let sha = format!("{n:064}");
            store.put(&api, &sha, &[n], "file", None).expect("put");
            if n == 0 {
                store.update(&api, |history| history.stable = Some(first.clone()));
            }
        }
        let reopened = VersionStore::open(Some(dir.path()), 2).expect("opens");
        let history = reopened.history(&api);
        let kept: Vec<&str> = history.versions.iter().map(|v| v.sha256.as_str()).collect();
        // The stable one stays whatever its age; two others are kept.
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept.contains(&first.as_str()));
        assert!(reopened.component(&api, &first).is_some());
        assert!(
            reopened.component(&api, &format!("{:064}", 1)).is_none(),
            "pruned"
        );
        assert_eq!(history.find(&first).map(|v| v.size), Ok(1));
        assert!(history.find("00").is_err(), "too short");
    }

    #[test]
    fn a_store_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let refused = VersionStore::open(Some(dir.path()), 2);
        assert!(refused.is_err_and(|reason| reason.contains("writable by others")));
    }
}

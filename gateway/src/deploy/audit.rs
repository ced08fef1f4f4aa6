//! The audit trail: one JSON line per operation on components (loaded,
//! swapped, refused, signature failure, rollout started, stepped, promoted,
//! rolled back, configuration reloaded), apart from the access log.
//!
//! Invariant: the file is only ever appended to (`O_APPEND`, one `write` per
//! line, so lines from concurrent writers never interleave), every line is a
//! complete JSON object with `time`, `event` and `actor`, and a failure to
//! write is logged and counted but never stops the operation it records.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

/// The audit log, or nowhere when none is configured.
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
    path: Option<PathBuf>,
    failures: Option<prometheus::IntCounter>,
}

/// One operation, built up field by field.
pub struct Entry {
    fields: Map<String, Value>,
}

impl Entry {
    /// An `event` done by `actor` (the file watcher, SIGHUP, the admin API
    /// and its client's address, the rollout controller).
    pub fn new(event: &str, actor: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("event".into(), event.into());
        fields.insert("actor".into(), actor.into());
        Self { fields }
    }

    /// Adds `key` (a handler, a version hash, an outcome, a reason).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }
}

impl Audit {
    /// Appends to `path` (created owner-only if missing); `None`: no audit log.
    pub fn open(path: Option<&Path>, failures: prometheus::IntCounter) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let Some(path) = path else {
            return Ok(Self::none());
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("{}: {error}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Ok(Self {
            file: Some(Mutex::new(file)),
            path: Some(path.to_path_buf()),
            failures: Some(failures),
        })
    }

    /// No audit log.
    pub fn none() -> Self {
        Self {
            file: None,
            path: None,
            failures: None,
        }
    }

    /// Where the lines go, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `entry` with the current time.
    pub fn record(&self, entry: Entry) {
        let Some(file) = &self.file else {
            return;
        };
        let mut fields = entry.fields;
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        fields.insert("time".into(), now.to_string().into());
        let mut line = Value::Object(fields).to_string();
        line.push('\n');
        // A poisoned lock only means another writer panicked mid-line; the
        // file itself is still fine to append to.
        let mut file = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = file.write_all(line.as_bytes()) {
            tracing::error!("cannot write the audit log: {error}");
            if let Some(failures) = &self.failures {
                failures.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit/audit.log");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, "{\"event\":\"earlier\"}\n").expect("earlier line");
        let counter = prometheus::IntCounter::new("f", "f").expect("counter");
        let audit = Audit::open(Some(&path), counter).expect("opens");
        audit.record(Entry::new("swapped", "file watcher").with("handler", "api"));
        audit.record(Entry::new("reloaded", "SIGHUP").with("generation", 3));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1]["event"], "swapped");
        assert_eq!(lines[1]["handler"], "api");
        assert_eq!(lines[2]["generation"], 3);
        assert!(lines[2]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

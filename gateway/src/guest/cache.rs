//! Compiled components on disk, so a restart or the return of a known file
//! skips compilation.
//!
//! Invariant: an entry is named by the SHA-256 of the component's bytes and
//! the engine's compatibility fingerprint, is written under a fresh
//! temporary name (never through a link someone left there) and renamed into
//! place, and is never rewritten: wasmtime maps the file into memory for as
//! long as the component lives. An entry is native code the gateway runs, so
//! the directory must be the gateway user's own and writable by nobody else
//! (created 0700); any other is refused and the gateway compiles instead.

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::private_files::{self, Unsafe};

/// SHA-256 of a component file, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("{:x}", Sha256::digest(bytes)))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0[..12])
    }
}

/// How many entries not in use are kept for quick rollbacks.
const KEEP_UNUSED: usize = 32;
const EXTENSION: &str = "cwasm";

/// A directory of compiled components for one engine configuration.
pub struct CompileCache {
    dir: PathBuf,
    fingerprint: String,
}

impl CompileCache {
    /// Opens (creating if needed) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        match private_files::ensure_dir(dir) {
            Ok(()) => {}
            Err(Unsafe::Io(error)) => return Err(error),
            Err(Unsafe::Owner(owner)) => {
                let user = rustix::process::geteuid().as_raw();
                return Err(io::Error::other(format!(
                    "it belongs to user {owner} (not {user}): compiled code planted there would run"
                )));
            }
            Err(Unsafe::Writable(mode)) => {
                return Err(io::Error::other(format!(
                    "other users may write to it (mode {mode:o}): compiled code planted there would run; chmod 700 it"
                )));
            }
        }
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_path_buf(),
            fingerprint: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.{EXTENSION}",
            hash.as_str(),
            self.fingerprint
        ))
    }

    /// The cached compilation of `hash`, if there is a usable one.
    pub fn load(&self, engine: &Engine, hash: &ContentHash) -> Option<Component> {
        let entry = self.entry(hash);
        if !entry.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be a compilation by
        // this wasmtime with a compatible engine: the name carries the
        // engine's fingerprint, only `store` writes here (whole files,
        // renamed into place, never modified afterwards), and the cache
        // directory is as trusted as the binary itself (see the README).
        #[allow(unsafe_code, reason = "mapping our own compiled artifact; see SAFETY")]
        let component = unsafe { Component::deserialize_file(engine, &entry) };
        match component {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(entry = %entry.display(), "ignoring an unusable cache entry: {error:#}");
                None
            }
        }
    }

    /// Saves `component` (compiled from content `hash`); failures only cost
    /// a later recompilation, so they are logged, not returned.
    pub fn store(&self, hash: &ContentHash, component: &Component) {
        let entry = self.entry(hash);
        if entry.is_file() {
            return;
        }
        let staging = self.dir.join(format!(
            ".{}-{}.{}.partial",
            hash.as_str(),
            self.fingerprint,
            std::process::id()
        ));
        let written = component
            .serialize()
            .map_err(|error| io::Error::other(format!("{error:#}")))
            .and_then(|bytes| private_files::replace(&staging, &entry, &bytes));
        if let Err(error) = written {
            tracing::warn!(entry = %entry.display(), "cannot write a cache entry: {error}");
        }
    }

    /// Deletes entries of other engine configurations and all but the most
    /// recent [`KEEP_UNUSED`] entries that are not in `in_use`.
    pub fn prune(&self, in_use: &HashSet<ContentHash>) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut unused = Vec::new();
        for entry in listing.filter_map(Result::ok) {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            let Some((hash, fingerprint)) = stem.split_once('-') else {
                continue;
            };
            if fingerprint != self.fingerprint {
                remove(&path);
            } else if !in_use.contains(&ContentHash(hash.to_string())) {
                let modified = entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                unused.push((modified, path));
            }
        }
        unused.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in unused.into_iter().skip(KEEP_UNUSED) {
            remove(&path);
        }
    }
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(entry = %path.display(), "pruned a stale cache entry"),
        Err(error) => tracing::debug!(entry = %path.display(), "cannot prune: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_directory_of_this_user_is_used() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let fresh = dir.path().join("a/b");
        CompileCache::open(&fresh, &Engine::default()).expect("a new directory");
        let mode = std::fs::metadata(&fresh)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let Err(refused) = CompileCache::open(&shared, &Engine::default()) else {
            panic!("a world-writable cache directory was accepted");
        };
        assert!(
            refused
                .to_string()
                .contains("other users may write to it (mode 777)"),
            "{refused}"
        );
    }

    #[test]
    fn staging_never_writes_through_a_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").expect("write");
        let staging = dir.path().join(".entry.partial");
        std::os::unix::fs::symlink(&target, &staging).expect("symlink");
        assert!(private_files::write_new(&staging, b"planted").is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    }

    #[test]
    fn pruning_drops_other_engines_and_old_unused_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::open(dir.path(), &Engine::default()).expect("cache");
        let entry = |hash: &str| {
            dir.path()
                .join(format!("{hash}-{}.{EXTENSION}", cache.fingerprint))
        };
        let foreign = dir
            .path()
            .join(format!("{}-0123456789abcdef.{EXTENSION}", "a".repeat(64)));
        std::fs::write(&foreign, b"other engine").expect("write");
        let in_use = ContentHash::of(b"in use");
        std::fs::write(entry(in_use.as_str()), b"x").expect("write");
        for index in 0..KEEP_UNUSED + 5 {
            std::fs::write(entry(ContentHash::of(&index.to_le_bytes()).as_str()), b"x")
                .expect("write");
        }
        let unrelated = dir.path().join("notes.txt");
        std::fs::write(&unrelated, b"not an entry").expect("write");

        cache.prune(&HashSet::from([in_use.clone()]));

        assert!(!foreign.exists(), "entries of another engine are stale");
        assert!(entry(in_use.as_str()).exists(), "entries in use stay");
        assert!(
            unrelated.exists(),
            "files that are not entries are left alone"
        );
        let entries = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == EXTENSION))
            .count();
        assert_eq!(entries, KEEP_UNUSED + 1);
    }
}

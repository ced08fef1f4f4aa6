//! Files only this user may write: what the gateway keeps on disk and later
//! runs (compiled code, stored component versions) must not be plantable by
//! anyone else.
//!
//! Invariant: a directory is used only if this user owns it and nobody else
//! may write to it; a file is written through a new owner-only file (never
//! through a link, never into someone else's file) and only then renamed
//! into place, whole. Imports nothing of the crate.

use std::io;
use std::path::Path;

/// Why a directory cannot be trusted.
#[derive(Debug)]
pub enum Unsafe {
    /// It could not be created or read.
    Io(io::Error),
    /// Another user (this uid) owns it.
    Owner(u32),
    /// Others may write to it (these permission bits).
    Writable(u32),
}

/// Creates `dir` (and its parents) mode 0700, or checks that an existing
/// one is this user's and not writable by others.
pub fn ensure_dir(dir: &Path) -> Result<(), Unsafe> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Unsafe::Io)?;
    let meta = std::fs::metadata(dir).map_err(Unsafe::Io)?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Unsafe::Owner(meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unsafe::Writable(meta.mode() & 0o777));
    }
    Ok(())
}

/// Writes `bytes` to a file that must not exist yet (no following a link
/// or writing into someone else's file), readable by this user only.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `target` whole with `bytes`: written to the new file `staging`,
/// then renamed over `target`; the staging file never outlives a failure.
pub fn replace(staging: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = write_new(staging, bytes).and_then(|()| std::fs::rename(staging, target));
    if written.is_err() {
        let _ = std::fs::remove_file(staging);
    }
    written
}

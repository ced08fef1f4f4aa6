//! `wasmgate dev`: the guest sources are watched; after an edit they are
//! built again (each toolchain rebuilds only what changed) and what
//! changed is installed into the handlers directory, where the serving
//! gateway's own watcher hot-swaps it.
//!
//! Invariant: one build at a time, after a quiet moment; a build that fails
//! installs nothing new for the crates that failed (their last good
//! component keeps serving) and says so once per failed build.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::toolchain;

/// How long the sources must be quiet before a build starts: an editor's
/// save is often several writes.
const QUIET: Duration = Duration::from_millis(300);

/// Builds `source` and installs into `handlers_dir` after every edit, until
/// the returned watcher is dropped.
pub fn watch(source: &Path, handlers_dir: &Path) -> notify::Result<RecommendedWatcher> {
    let source = source.canonicalize()?;
    // Installing is not editing (a project may install inside its sources).
    let installed = handlers_dir
        .canonicalize()
        .unwrap_or_else(|_| handlers_dir.to_path_buf());
    let (edits, mut edited) = mpsc::unbounded_channel();
    let watched = source.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let source = &watched;
        let Ok(event) = event else { return };
        let is_edit = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        // Build output, installed toolchains and hidden files (editors'
        // swap files, .git) are not sources.
        let relevant = event
            .paths
            .iter()
            .any(|path| !path.starts_with(&installed) && toolchain::is_source(source, path));
        if is_edit && relevant {
            let _ = edits.send(());
        }
    })?;
    watcher.watch(&source, RecursiveMode::Recursive)?;
    let handlers_dir = handlers_dir.to_path_buf();
    tokio::spawn(async move {
        while edited.recv().await.is_some() {
            loop {
                match tokio::time::timeout(QUIET, edited.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            let (source, handlers_dir) = (source.clone(), handlers_dir.clone());
            let built = tokio::task::spawn_blocking(move || rebuild(&source, &handlers_dir)).await;
            match built {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("error: {error}"),
                Err(join) => eprintln!("error: the build panicked: {join}"),
            }
        }
    });
    Ok(watcher)
}

/// One build and install; what changed is named on stderr.
fn rebuild(source: &Path, handlers_dir: &Path) -> Result<(), String> {
    eprintln!("sources changed; building {}", source.display());
    toolchain::build_and_install(source, handlers_dir)
        .map_err(|failure| format!("{failure}; what failed keeps serving its last good version"))
}

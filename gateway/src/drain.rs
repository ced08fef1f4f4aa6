//! The one drain primitive for graceful shutdown.
//!
//! Invariant: every connection task is spawned through [`Drain::spawn`], so
//! [`Drain::wait`] returns only once all of them have finished (or the grace
//! period is over); after [`Drain::start`], listeners stop accepting and
//! connections stop taking new requests but finish the ones in flight.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Signal and wait-group for shutdown; cheap to clone.
#[derive(Clone, Default)]
pub struct Drain {
    signal: CancellationToken,
    tasks: TaskTracker,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` as one the drain waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once shutdown has started.
    pub async fn signaled(&self) {
        self.signal.cancelled().await;
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Starts shutdown: listeners stop, connections wind down.
    pub fn start(&self) {
        self.signal.cancel();
        self.tasks.close();
    }

    /// Waits up to `grace` for every tracked task; returns how many were
    /// still running when it gave up (0 when the drain completed).
    pub async fn wait(&self, grace: Duration) -> usize {
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_elapsed) => self.tasks.len(),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

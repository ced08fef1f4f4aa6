//! The one drain primitive for graceful shutdown.
//!
//! Invariant: every connection task is spawned through [`Drain::spawn`], so
//! [`Drain::wait`] returns only once all of them have finished (or the grace
//! period is over); after [`Drain::start`], listeners stop accepting and
//! connections stop taking new requests but finish the ones in flight.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
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

    /// Sleeps `wait`; false when shutdown starts first (the caller's loop
    /// then ends).
    pub async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.signaled() => false,
        }
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

/// SIGTERM and SIGINT, registered when this is made: a signal that arrives
/// before its handler is registered takes its default action and kills the
/// process, so register before announcing that the gateway is up.
pub struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    /// Registers the handlers.
    pub fn register() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

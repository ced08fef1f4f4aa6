//! A resident component that serves calls (it exports no `wasi:cli/run`):
//! one long-lived instance shared by every caller (wired imports,
//! invocation routes, channel messages), so what it keeps in memory is
//! state they all see.
//!
//! Invariant: calls are serialized (one at a time, each waiting at most
//! until its own deadline); a call that fails (trap, deadline, fuel) drops
//! the instance, which its supervisor replaces after the back-off, and
//! until then calls are refused with the reason; a call never makes an
//! instance itself.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, Notify};
use wasmtime::component::Val;

use super::super::host::{Linked, refuel};
use super::super::pubsub::Hub;
use super::super::supervision::{Exit, Next, State, Supervision};
use super::{Export, Library, Refused};

/// The shared instance and its supervision.
pub struct Shared {
    slot: Mutex<Slot>,
    /// Told when the instance is dropped after a failure.
    emptied: Notify,
    pub(in crate::guest) supervision: Arc<Supervision>,
    /// The CPU budget of each call, for the failure's description.
    fuel: Option<u64>,
    /// The hub its instances publish to, once it is supervised.
    hub: std::sync::OnceLock<Arc<Hub>>,
}

struct Slot {
    linked: Option<Linked>,
    /// The wait before the next instance, set when one failed.
    restart_in: std::time::Duration,
}

impl Shared {
    pub(super) fn new(supervision: Arc<Supervision>, fuel: Option<u64>) -> Self {
        Self {
            slot: Mutex::new(Slot {
                linked: None,
                restart_in: std::time::Duration::ZERO,
            }),
            emptied: Notify::new(),
            supervision,
            fuel,
            hub: std::sync::OnceLock::new(),
        }
    }

    /// Lets its instances publish on `hub` (the one made at load too).
    pub(in crate::guest) async fn attach(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::clone(hub));
        if let Some(linked) = self.slot.lock().await.linked.as_mut() {
            linked.store.data_mut().attachment.hub = Some(Arc::clone(hub));
        }
    }

    /// Makes its instance (at load, and by its supervisor after a failure).
    pub(in crate::guest) async fn fill(&self, library: &Library) -> wasmtime::Result<()> {
        let linked = library.instantiate(super::super::host::far_future()).await;
        let mut slot = self.slot.lock().await;
        match linked {
            Ok(mut linked) => {
                linked.store.data_mut().attachment.hub = self.hub.get().cloned();
                slot.linked = Some(linked);
                self.supervision.set(State::Ready);
                Ok(())
            }
            Err(error) => {
                self.failed(&mut slot, &error);
                Err(error)
            }
        }
    }

    /// Waits until its instance failed (or the supervisor is told to look),
    /// then says how long to wait before making the next one (`None`: it
    /// has failed for good).
    pub(in crate::guest) async fn emptied(&self) -> Option<std::time::Duration> {
        self.emptied.notified().await;
        let slot = self.slot.lock().await;
        (self.supervision.state() != State::Failed).then_some(slot.restart_in)
    }

    /// Calls `export` on the shared instance, after the calls before it.
    pub(super) async fn call(
        &self,
        library: &Library,
        export: &Export,
        params: &[Val],
        results: &mut [Val],
        deadline: Instant,
    ) -> wasmtime::Result<()> {
        let name = library.name();
        let mut slot = tokio::time::timeout_at(deadline.into(), self.slot.lock())
            .await
            .map_err(|_| {
                wasmtime::format_err!(
                    "resident `{name}` was busy with other calls until the deadline"
                )
            })?;
        let Some(linked) = slot.linked.as_mut() else {
            return Err(match self.supervision.state() {
                State::Failed => {
                    wasmtime::format_err!("resident `{name}` has failed (crash loop; see /status)")
                }
                _ => wasmtime::format_err!("resident `{name}` is restarting"),
            });
        };
        linked.store.data_mut().deadline = deadline;
        refuel(&mut linked.store);
        for (store, _) in &mut linked.advice {
            store.data_mut().deadline = deadline;
            refuel(store);
        }
        let outcome = library.call_export(linked, export, params, results).await;
        // Between calls the instance waits with no deadline.
        if let Some(linked) = slot.linked.as_mut() {
            linked.store.data_mut().deadline = super::super::host::far_future();
        }
        if let Err(error) = &outcome
            && !error.is::<Refused>()
        {
            self.failed(&mut slot, error);
        }
        outcome
    }

    /// Its instance failed with `error`: dropped, and the supervisor told.
    fn failed(&self, slot: &mut Slot, error: &wasmtime::Error) {
        slot.linked = None;
        if let Next::RestartIn(delay) = self
            .supervision
            .ended(Exit::from_error(error, self.fuel), Instant::now())
        {
            slot.restart_in = delay;
        }
        self.emptied.notify_one();
    }
}

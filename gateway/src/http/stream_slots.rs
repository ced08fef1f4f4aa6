//! How many streams (WebSocket connections, event streams) each route has
//! open, against its `stream.max_connections`.
//!
//! Invariant: the count lives outside the snapshot, so a hot swap does not
//! reset it while the old version's streams stay open; a reload that changes
//! a route's limit starts a new count for that route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open streams per route, across generations: a swap does not reset the
/// count, since the old version's connections stay open.
#[derive(Default)]
pub struct StreamSlots {
    routes: Mutex<HashMap<SlotKey, Arc<Semaphore>>>,
}

/// A route and its limit: a reload that changes the limit starts a new count.
type SlotKey = (Arc<str>, usize);

impl StreamSlots {
    /// One of `route`'s `max` slots, held until dropped; `None` when all are taken.
    pub fn take(&self, route: &Arc<str>, max: usize) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                routes
                    .entry((Arc::clone(route), max))
                    .or_insert_with(|| Arc::new(Semaphore::new(max))),
            )
        };
        semaphore.try_acquire_owned().ok()
    }
}

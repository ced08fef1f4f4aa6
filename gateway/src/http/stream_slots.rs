//! How many streams (WebSocket connections, event streams) each route has
//! open, against its `stream.max_connections`, and all routes together,
//! against the instances streams may hold (`gateway.max_instances` minus
//! `gateway.http_reserve`).
//!
//! Invariant: a stream holds one slot of each for its life, so streams can
//! never take the instances reserved for plain HTTP. The counts live outside
//! the snapshot, so a hot swap does not reset them while the old version's
//! streams stay open; a reload that changes a route's limit starts a new
//! count for that route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open streams per route and in all, across generations: a swap does not
/// reset the counts, since the old version's connections stay open.
pub struct StreamSlots {
    routes: Mutex<HashMap<SlotKey, Arc<Semaphore>>>,
    instances: Arc<Semaphore>,
}

/// A stream's place in its route's count and in the instances for streams.
pub struct StreamSlot {
    _route: OwnedSemaphorePermit,
    _instance: OwnedSemaphorePermit,
}

/// A route and its limit: a reload that changes the limit starts a new count.
type SlotKey = (Arc<str>, usize);

impl StreamSlots {
    /// Counts for streams that may hold `instances` guest instances in all.
    pub fn new(instances: usize) -> Self {
        Self {
            routes: Mutex::default(),
            instances: Arc::new(Semaphore::new(instances)),
        }
    }

    /// One of `route`'s `max` slots and one of the streams' instances, held
    /// until dropped; `None` when either is used up.
    pub fn take(&self, route: &Arc<str>, max: usize) -> Option<StreamSlot> {
        let semaphore = {
            let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                routes
                    .entry((Arc::clone(route), max))
                    .or_insert_with(|| Arc::new(Semaphore::new(max))),
            )
        };
        let route = semaphore.try_acquire_owned().ok()?;
        let instance = Arc::clone(&self.instances).try_acquire_owned().ok()?;
        Some(StreamSlot {
            _route: route,
            _instance: instance,
        })
    }
}

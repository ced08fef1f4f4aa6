//! Safe deployments: the versions a handler has served, how requests are
//! split between the ones serving now, how a canary is judged, who signed
//! a component, and the audit trail of every operation.
//!
//! Owns: the version store and history ([`store`]), the request split
//! ([`split`]), the canary verdict ([`judge`]), signatures ([`signing`]),
//! the audit log ([`audit`]), and [`Deployments`], the rollout state of
//! each handler that lives only in memory (its candidate, whether its
//! previous version is kept warm).
//!
//! May use: `config`, and `private_files` for the store. The control plane (`control::live`,
//! `control::rollout`) acts on this state; nothing here loads a component
//! or publishes a snapshot.
//!
//! Invariant: what must survive a restart (stable, previous, the file's
//! last hash, the versions) is in the store; a candidate never is, so a
//! restart always resumes on the last stable version, never half-way.

pub mod audit;
pub mod judge;
pub mod signing;
pub mod split;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::HandlerName;
use crate::config::deploy::{BlueGreenPlan, CanaryPlan};

pub use audit::{Audit, Entry};
pub use store::{History, VersionStore};

/// A version's short name in logs, labels and messages: the first 12 hex
/// digits of its SHA-256 (all of it if a stored history holds less).
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// A version taking part of a handler's traffic beside its stable version.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Tells one rollout from the one that replaced it.
    pub id: u64,
    /// Its content hash.
    pub sha256: String,
    /// The name a pin header or cookie uses (`canary` by default).
    pub name: Arc<str>,
    /// Its current share, in basis points.
    pub weight: u32,
    /// What drives it.
    pub strategy: Strategy,
    /// The current step (canary), from 0.
    pub step: usize,
    /// Failed checks so far (canary).
    pub failures: u32,
    /// Who started it, for the audit trail.
    pub actor: String,
}

/// How a candidate's share changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Judged steps, then promotion or rollback.
    Canary(CanaryPlan),
    /// Warmed (and smoke-tested) at 0%, then switched to all at once.
    BlueGreen(BlueGreenPlan),
    /// A fixed share (A/B) until promoted or rolled back by an operator.
    Fixed,
}

impl Strategy {
    /// Its name in `/status`, logs and the audit trail.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Canary(_) => "canary",
            Self::BlueGreen(_) => "blue-green",
            Self::Fixed => "split",
        }
    }
}

/// A new file for a handler whose versions roll out gradually.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The handler.
    pub handler: HandlerName,
    /// The file's hash when the build saw it.
    pub sha256: String,
    /// What noticed it (the file watcher, SIGHUP, the admin API).
    pub actor: String,
}

/// Arrivals waiting for the rollout controller; more than this many at
/// once are dropped (each is noticed again by the next reload).
const ARRIVALS: usize = 64;

/// Every handler's deployment state: the store (persistent) and the
/// candidates and warm previous versions (in memory).
pub struct Deployments {
    /// Versions and histories.
    pub store: VersionStore,
    /// The audit trail.
    pub audit: Audit,
    running: Mutex<HashMap<HandlerName, Running>>,
    next_id: AtomicU64,
    arrivals: tokio::sync::mpsc::Sender<Arrival>,
    arrived: Mutex<Option<tokio::sync::mpsc::Receiver<Arrival>>>,
}

#[derive(Default)]
struct Running {
    candidate: Option<Candidate>,
    /// The previous version stays loaded until then.
    warm_until: Option<Instant>,
}

impl Deployments {
    /// State over `store`, recording to `audit`.
    pub fn new(store: VersionStore, audit: Audit) -> Self {
        let (arrivals, arrived) = tokio::sync::mpsc::channel(ARRIVALS);
        Self {
            store,
            audit,
            running: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            arrivals,
            arrived: Mutex::new(Some(arrived)),
        }
    }

    /// Passes a new file on to the rollout controller.
    pub fn announce(&self, arrival: Arrival) {
        if let Err(error) = self.arrivals.try_send(arrival) {
            tracing::warn!("a new component waits for the next reload: {error}");
        }
    }

    /// The arrivals, for the one rollout controller.
    pub fn take_arrivals(&self) -> Option<tokio::sync::mpsc::Receiver<Arrival>> {
        self.arrived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// A fresh rollout id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HandlerName, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `handler`'s candidate, if one is rolling out.
    pub fn candidate(&self, handler: &HandlerName) -> Option<Candidate> {
        self.lock().get(handler)?.candidate.clone()
    }

    /// Replaces `handler`'s candidate; returns the one it replaced.
    pub fn set_candidate(
        &self,
        handler: &HandlerName,
        candidate: Option<Candidate>,
    ) -> Option<Candidate> {
        let mut running = self.lock();
        let entry = running.entry(handler.clone()).or_default();
        std::mem::replace(&mut entry.candidate, candidate)
    }

    /// Changes the candidate of rollout `id`, if it is still `handler`'s;
    /// returns the changed candidate.
    pub fn update_candidate(
        &self,
        handler: &HandlerName,
        id: u64,
        change: impl FnOnce(&mut Candidate),
    ) -> Option<Candidate> {
        let mut running = self.lock();
        let candidate = running.get_mut(handler)?.candidate.as_mut()?;
        if candidate.id != id {
            return None;
        }
        change(candidate);
        Some(candidate.clone())
    }

    /// Ends rollout `id` of `handler` (its candidate leaves); returns the
    /// candidate, or `None` when that rollout is no longer the current one.
    pub fn end_candidate(&self, handler: &HandlerName, id: u64) -> Option<Candidate> {
        let mut running = self.lock();
        let slot = &mut running.get_mut(handler)?.candidate;
        if slot.as_ref().is_some_and(|candidate| candidate.id == id) {
            slot.take()
        } else {
            None
        }
    }

    /// Keeps `handler`'s previous version loaded until `until`.
    pub fn keep_warm(&self, handler: &HandlerName, until: Instant) {
        self.lock().entry(handler.clone()).or_default().warm_until = Some(until);
    }

    /// Whether `handler`'s previous version should be loaded now.
    pub fn is_warm(&self, handler: &HandlerName) -> bool {
        self.lock()
            .get(handler)
            .and_then(|running| running.warm_until)
            .is_some_and(|until| Instant::now() < until)
    }
}

//! Applying a decision another node made (cluster mode): fetch the versions
//! it names that this node lacks, then serve them at the decided shares.
//! A follower never drives a rollout: its candidate has a fixed share that
//! only the deciding node's next decision changes.
//!
//! Invariant: a version is staged only once its bytes hash to its name,
//! and serves only after it loaded here (signature, compile, link, as any
//! other version); one that fails leaves the handler as it was, and the
//! stable version in the store goes back to what it was.

use std::sync::Arc;
use std::time::Instant;

use super::{Controller, KEEP_WARM_AFTER_CANARY, Refusal};
use crate::cluster::shared::{Decision, FetchError, Shared};
use crate::config::HandlerName;
use crate::deploy::{Candidate, Entry, Strategy};

/// What applying a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The handler now serves as decided.
    Applied,
    /// It already did.
    Unchanged,
}

impl Controller {
    /// Makes `handler` serve what `decision` says, fetching missing
    /// versions from `shared`.
    pub async fn adopt(
        self: &Arc<Self>,
        handler: &HandlerName,
        decision: &Decision,
        shared: &Shared,
    ) -> Result<Adopted, Refusal> {
        if !self.app.live.load().handlers.contains_key(handler) {
            return Err(Refusal::UnknownHandler(handler.to_string()));
        }
        let deployments = Arc::clone(&self.app.deployments);
        for sha in decision.versions() {
            if deployments.store.component(handler, sha).is_some() {
                continue;
            }
            let file = shared.fetch(sha).await.map_err(|error| match error {
                FetchError::Refused(reason) => Refusal::Failed(reason),
                FetchError::Unreachable(reason) => Refusal::Unreachable(reason),
            })?;
            self.stage(handler, sha, file).await?;
        }
        let from = deployments.store.history(handler).stable;
        let current = deployments.candidate(handler);
        // A candidate that is the stable version is not served beside it
        // (read while the deciding node was promoting it).
        let wanted = decision
            .candidate
            .as_ref()
            .filter(|candidate| Some(&candidate.sha256) != decision.stable.as_ref());
        // This node's candidate and the wanted one, compared as a decision
        // names them.
        let held = current
            .as_ref()
            .map(|c| (c.sha256.as_str(), &*c.name, c.weight));
        if from == decision.stable
            && held == wanted.map(|w| (w.sha256.as_str(), w.name.as_str(), w.weight))
        {
            return Ok(Adopted::Unchanged);
        }
        let actor = format!("node {}", decision.node);
        match (current, wanted) {
            (_, None) => {
                deployments.set_candidate(handler, None);
            }
            (Some(current), Some(wanted))
                if current.sha256 == wanted.sha256 && *current.name == *wanted.name =>
            {
                deployments.update_candidate(handler, current.id, |c| c.weight = wanted.weight);
            }
            (_, Some(wanted)) => {
                deployments.set_candidate(
                    handler,
                    Some(Candidate {
                        id: deployments.next_id(),
                        sha256: wanted.sha256.clone(),
                        name: Arc::from(wanted.name.as_str()),
                        weight: wanted.weight,
                        strategy: Strategy::Fixed,
                        step: 0,
                        failures: 0,
                        actor: actor.clone(),
                    }),
                );
            }
        }
        let stable_changes = from != decision.stable;
        if stable_changes {
            self.set_stable(handler, decision.stable.as_deref()).await;
            deployments.keep_warm(handler, Instant::now() + KEEP_WARM_AFTER_CANARY);
        }
        self.publish(&format!("decision of {actor}")).await?;
        let snapshot = self.app.live.load_full();
        let serving = snapshot.handlers.get(handler);
        let stable_serves = decision.stable.as_ref().is_none_or(|sha| {
            serving.is_some_and(|deployed| deployed.stable().hash().as_str() == sha)
        });
        let candidate_serves = wanted.is_none_or(|wanted| {
            serving
                .and_then(|deployed| deployed.named(&wanted.name))
                .is_some_and(|version| version.handler.hash().as_str() == wanted.sha256)
        });
        if !(stable_serves && candidate_serves) {
            if stable_changes {
                self.restore_stable(handler, from.clone());
            }
            let serving: Vec<String> = serving.map_or_else(Vec::new, |deployed| {
                deployed
                    .versions
                    .iter()
                    .map(|v| format!("{} as {}", v.handler.hash(), v.name))
                    .collect()
            });
            let reason = snapshot
                .load_errors
                .get(handler)
                .cloned()
                .unwrap_or_else(|| format!("it did not load (serving: {})", serving.join(", ")));
            self.audit(
                Entry::new("cluster_refused", &actor)
                    .with("handler", handler.as_str())
                    .with("reason", reason.clone()),
            );
            return Err(Refusal::Failed(reason));
        }
        for sha in decision.versions() {
            let size = deployments
                .store
                .component(handler, sha)
                .and_then(|path| std::fs::metadata(path).ok())
                .map_or(0, |meta| meta.len());
            deployments.store.record(handler, sha, size, "cluster");
        }
        if stable_changes {
            self.schedule_cooling(handler, KEEP_WARM_AFTER_CANARY);
        }
        let mut entry = Entry::new("cluster_applied", &actor)
            .with("handler", handler.as_str())
            .with("stable", decision.stable.clone());
        if let Some(wanted) = wanted {
            entry = entry
                .with("candidate", wanted.sha256.clone())
                .with("weight_percent", f64::from(wanted.weight) / 100.0);
        }
        self.audit(entry);
        tracing::info!(
            handler = handler.as_str(),
            stable = decision.stable.as_deref().map(crate::deploy::short),
            candidate = wanted.map(|c| crate::deploy::short(&c.sha256)),
            weight = wanted.map(|c| c.weight),
            from = %actor,
            "cluster: decision applied"
        );
        Ok(Adopted::Applied)
    }

    /// Notes that this node decided what `handler` serves, for the others.
    pub(super) fn share(&self, handler: &HandlerName) {
        if let Some(cluster) = &self.app.cluster {
            cluster.decided(handler);
        }
    }
}

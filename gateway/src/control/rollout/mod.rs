//! The rollout controller: takes a new version in (from the admin API or a
//! file drop whose handler rolls out gradually), puts it beside the stable
//! version, and drives it: canary steps judged on the gateway's own
//! per-version metrics, a blue-green switch after a smoke request, or a
//! fixed A/B share; then promotes it or pulls it back.
//!
//! The drivers (canary steps, the blue-green smoke request) are in
//! [`drive`]. Every change is a new generation published through the [`Reloader`]
//! (never overlapping a reload), built from the live configuration, so a
//! request in flight finishes on the version it started on and unchanged
//! versions are carried over, not reloaded.
//!
//! Invariant: a candidate takes traffic only once it has loaded and warmed
//! in a published generation; a rollout acts only while it is still its
//! handler's current one (a newer deploy, a rollback or a promotion ends
//! it); promotion and rollback change the stable version only through the
//! history in the store, so a restart resumes on the last stable version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::config::HandlerName;
use crate::config::deploy::{BlueGreenPlan, CanaryPlan};
use crate::control::reload::{Outcome, Reloader};
use crate::deploy::{Arrival, Candidate, Entry, Strategy};
use crate::guest::ComponentFile;

mod adopt;
mod drive;

pub use adopt::Adopted;

/// How a deploy proceeds once its version has loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Switch all traffic at once.
    Immediate,
    /// Judged steps.
    Canary(CanaryPlan),
    /// Smoke request, then switch; the old version stays warm.
    BlueGreen(BlueGreenPlan),
    /// A fixed share (basis points) until promoted or rolled back.
    Split(u32),
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such handler is configured.
    #[error("no handler {0} is served here")]
    UnknownHandler(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The version did not load (compile, link, signature...).
    #[error("{0}")]
    Failed(String),
    /// A version could not be fetched from the cluster now (worth trying
    /// again).
    #[error("{0}")]
    Unreachable(String),
    /// The gateway is shutting down.
    #[error("draining: the gateway is shutting down")]
    Draining,
}

/// Keeps the old version loaded after a canary's promotion.
const KEEP_WARM_AFTER_CANARY: Duration = Duration::from_secs(600);
/// The longest a smoke request may take.
const SMOKE_LIMIT: Duration = Duration::from_secs(30);

/// The controller of every handler's rollouts.
pub struct Controller {
    app: Arc<App>,
    reloader: Arc<Reloader>,
}

impl Controller {
    /// A controller publishing through `reloader`; it takes the arrivals of
    /// new files from `app.deployments` on a task of its own.
    pub fn start(app: Arc<App>, reloader: Arc<Reloader>) -> Arc<Self> {
        let controller = Arc::new(Self { app, reloader });
        if let Some(mut arrivals) = controller.app.deployments.take_arrivals() {
            let this = Arc::clone(&controller);
            tokio::spawn(async move {
                while let Some(arrival) = arrivals.recv().await {
                    this.arrived(arrival).await;
                }
            });
        }
        controller
    }

    /// A new file for a handler whose policy rolls out gradually.
    async fn arrived(self: &Arc<Self>, arrival: Arrival) {
        let snapshot = self.app.live.load_full();
        let Some(config) = snapshot.config.handlers.get(&arrival.handler) else {
            return;
        };
        let path = config.path.clone();
        let read = tokio::task::spawn_blocking(move || ComponentFile::read(&path)).await;
        let Ok(Ok(file)) = read else {
            return;
        };
        if file.hash.as_str() != arrival.sha256 {
            // Changed again since: the next reload announces the newer one.
            return;
        }
        let order = match snapshot
            .config
            .handler_deploy
            .get(&arrival.handler)
            .map(|policy| policy.rollout.clone())
        {
            Some(crate::config::deploy::RolloutPolicy::Canary(plan)) => Order::Canary(plan),
            Some(crate::config::deploy::RolloutPolicy::BlueGreen(plan)) => Order::BlueGreen(plan),
            _ => Order::Immediate,
        };
        let handler = arrival.handler.clone();
        let sha = arrival.sha256.clone();
        // Taken in: an unchanged file never starts this rollout again.
        let deployments = Arc::clone(&self.app.deployments);
        let _ = tokio::task::spawn_blocking(move || {
            deployments
                .store
                .update(&handler, |history| history.file = Some(sha));
        })
        .await;
        let deploy = Deploy {
            handler: arrival.handler.clone(),
            file,
            name: None,
            order,
            actor: arrival.actor,
            source: "file",
        };
        if let Err(refusal) = self.deploy(deploy).await {
            tracing::error!(
                handler = arrival.handler.as_str(),
                "new file not rolled out: {refusal}"
            );
        }
    }

    /// Takes `deploy`'s version in and starts its rollout; answers once the
    /// version serves (as a candidate, or as stable for an immediate switch).
    pub async fn deploy(self: &Arc<Self>, deploy: Deploy) -> Result<serde_json::Value, Refusal> {
        let Deploy {
            handler,
            file,
            name,
            order,
            actor,
            source,
        } = deploy;
        let snapshot = self.app.live.load_full();
        let Some(deployed) = snapshot.handlers.get(&handler) else {
            return Err(Refusal::UnknownHandler(handler.to_string()));
        };
        let sha = file.hash.as_str().to_string();
        if deployed.stable().hash().as_str() == sha {
            return Err(Refusal::Invalid(format!(
                "version {} is already {handler}'s stable version",
                file.hash
            )));
        }
        let name: Arc<str> = Arc::from(name.as_deref().unwrap_or("canary"));
        let size = file.bytes().len() as u64;
        self.stage(&handler, &sha, file).await?;
        let (strategy, weight) = match &order {
            Order::Canary(plan) => (Strategy::Canary(plan.clone()), 0),
            Order::BlueGreen(plan) => (Strategy::BlueGreen(plan.clone()), 0),
            Order::Immediate => (Strategy::BlueGreen(BlueGreenPlan::default()), 0),
            Order::Split(weight) => (Strategy::Fixed, *weight),
        };
        let id = self.app.deployments.next_id();
        let candidate = Candidate {
            id,
            sha256: sha.clone(),
            name: Arc::clone(&name),
            weight,
            strategy: strategy.clone(),
            step: 0,
            failures: 0,
            actor: actor.clone(),
        };
        let replaced = self
            .app
            .deployments
            .set_candidate(&handler, Some(candidate));
        if let Some(replaced) = replaced {
            self.audit(
                Entry::new("rolled_back", &actor)
                    .with("handler", handler.as_str())
                    .with("version", replaced.sha256)
                    .with("reason", "replaced by a newer deploy"),
            );
        }
        self.publish(&format!("deploy by {actor}")).await?;
        // Loaded? A version that failed was taken out again, with the reason.
        let snapshot = self.app.live.load_full();
        let serving = snapshot
            .handlers
            .get(&handler)
            .and_then(|deployed| deployed.named(&name))
            .is_some_and(|version| version.handler.hash().as_str() == sha);
        if !serving {
            // Settling that generation took the candidate out and wrote
            // the refusal, with its reason, to the audit log.
            self.app.deployments.store.discard(&handler, &sha);
            let reason = snapshot
                .load_errors
                .get(&handler)
                .cloned()
                .unwrap_or_else(|| "it did not load".into());
            return Err(Refusal::Failed(reason));
        }
        self.app
            .deployments
            .store
            .record(&handler, &sha, size, source);
        self.audit(
            Entry::new("rollout_started", &actor)
                .with("handler", handler.as_str())
                .with("version", sha.clone())
                .with("from", deployed.stable().hash().as_str())
                .with("strategy", strategy.label())
                .with("name", &*name),
        );
        tracing::info!(
            handler = handler.as_str(),
            version = crate::deploy::short(&sha),
            strategy = strategy.label(),
            %actor,
            "rollout started"
        );
        self.share(&handler);
        match order {
            Order::Immediate => {
                self.promote_candidate(&handler, id, &actor, Duration::from_secs(600))
                    .await?;
            }
            Order::Canary(plan) => {
                let this = Arc::clone(self);
                let handler = handler.clone();
                tokio::spawn(async move { this.drive_canary(handler, id, plan).await });
            }
            Order::BlueGreen(plan) => {
                let this = Arc::clone(self);
                let handler = handler.clone();
                tokio::spawn(async move { this.drive_blue_green(handler, id, plan).await });
            }
            Order::Split(_) => {}
        }
        Ok(json!({
            "handler": handler.as_str(),
            "version": sha,
            "strategy": strategy.label(),
            "name": &*name,
        }))
    }

    /// Makes the candidate stable now (an operator's `promote`).
    pub async fn promote(
        self: &Arc<Self>,
        handler: &HandlerName,
        actor: &str,
    ) -> Result<serde_json::Value, Refusal> {
        let Some(candidate) = self.app.deployments.candidate(handler) else {
            return Err(Refusal::Invalid(format!(
                "{handler} has no rollout to promote"
            )));
        };
        let keep_warm = match &candidate.strategy {
            Strategy::BlueGreen(plan) => plan.keep_warm,
            _ => KEEP_WARM_AFTER_CANARY,
        };
        self.promote_candidate(handler, candidate.id, actor, keep_warm)
            .await?;
        Ok(json!({ "handler": handler.as_str(), "stable": candidate.sha256 }))
    }

    /// Stops the rollout (its candidate leaves at once), or, with none in
    /// progress, makes `to` (a hash prefix) or the previous version stable.
    pub async fn rollback(
        self: &Arc<Self>,
        handler: &HandlerName,
        to: Option<&str>,
        actor: &str,
    ) -> Result<serde_json::Value, Refusal> {
        if !self.app.live.load().handlers.contains_key(handler) {
            return Err(Refusal::UnknownHandler(handler.to_string()));
        }
        if to.is_none()
            && let Some(candidate) = self.app.deployments.candidate(handler)
        {
            self.pull_back(handler, candidate.id, actor, "by an operator")
                .await?;
            return Ok(json!({ "handler": handler.as_str(), "removed": candidate.sha256 }));
        }
        let history = self.app.deployments.store.history(handler);
        let target = match to {
            Some(prefix) => history
                .find(prefix)
                .map_err(Refusal::Invalid)?
                .sha256
                .clone(),
            None => history.previous.clone().ok_or_else(|| {
                Refusal::Invalid(format!("{handler} has no previous version to go back to"))
            })?,
        };
        let from = history.stable.clone();
        if from.as_ref() == Some(&target) {
            return Err(Refusal::Invalid(format!(
                "{} is already stable",
                crate::deploy::short(&target)
            )));
        }
        if self
            .app
            .deployments
            .store
            .component(handler, &target)
            .is_none()
        {
            return Err(Refusal::Invalid(format!(
                "{} is no longer in the version store",
                crate::deploy::short(&target)
            )));
        }
        self.app.deployments.set_candidate(handler, None);
        let started = Instant::now();
        self.set_stable(handler, Some(&target)).await;
        self.app
            .deployments
            .keep_warm(handler, Instant::now() + KEEP_WARM_AFTER_CANARY);
        self.publish(&format!("rollback by {actor}")).await?;
        let serving = self
            .app
            .live
            .load()
            .handler(handler)
            .map(|h| h.hash().as_str().to_string());
        if serving.as_ref() != Some(&target) {
            // It did not load: put the history back as it was.
            self.restore_stable(handler, from.clone());
            let reason = self
                .app
                .live
                .load()
                .load_errors
                .get(handler)
                .cloned()
                .unwrap_or_default();
            return Err(Refusal::Failed(format!(
                "{} did not load: {reason}",
                crate::deploy::short(&target)
            )));
        }
        self.share(handler);
        self.schedule_cooling(handler, KEEP_WARM_AFTER_CANARY);
        self.app
            .metrics
            .rollout_rollbacks
            .with_label_values(&[handler.as_str()])
            .inc();
        let millis = started.elapsed().as_millis() as u64;
        self.audit(
            Entry::new("rolled_back", actor)
                .with("handler", handler.as_str())
                .with("version", target.clone())
                .with("from", from)
                .with("outcome", "serving")
                .with("ms", millis),
        );
        Ok(json!({ "handler": handler.as_str(), "stable": target, "ms": millis }))
    }

    /// Rollout `id`'s candidate becomes stable; the old stable version stays
    /// warm for `keep_warm`.
    async fn promote_candidate(
        &self,
        handler: &HandlerName,
        id: u64,
        actor: &str,
        keep_warm: Duration,
    ) -> Result<(), Refusal> {
        let Some(candidate) = self
            .app
            .deployments
            .candidate(handler)
            .filter(|c| c.id == id)
        else {
            return Ok(());
        };
        let from = self.app.deployments.store.history(handler).stable;
        self.set_stable(handler, Some(&candidate.sha256)).await;
        self.app.deployments.set_candidate(handler, None);
        self.app
            .deployments
            .keep_warm(handler, Instant::now() + keep_warm);
        self.publish(&format!("promotion by {actor}")).await?;
        self.share(handler);
        self.schedule_cooling(handler, keep_warm);
        tracing::info!(
            handler = handler.as_str(),
            version = crate::deploy::short(&candidate.sha256),
            "promoted"
        );
        self.audit(
            Entry::new("promoted", actor)
                .with("handler", handler.as_str())
                .with("version", candidate.sha256.clone())
                .with("from", from)
                .with("strategy", candidate.strategy.label()),
        );
        // Counted last: a reader who sees the count finds the rest done.
        self.count_end(handler, &self.app.metrics.rollout_promotions);
        Ok(())
    }

    /// Takes rollout `id`'s candidate out at once.
    async fn pull_back(
        &self,
        handler: &HandlerName,
        id: u64,
        actor: &str,
        why: &str,
    ) -> Result<(), Refusal> {
        let Some(candidate) = self.app.deployments.end_candidate(handler, id) else {
            return Ok(());
        };
        self.publish(&format!("rollback by {actor}")).await?;
        self.share(handler);
        tracing::warn!(
            handler = handler.as_str(),
            version = crate::deploy::short(&candidate.sha256),
            "rolled back: {why}"
        );
        self.audit(
            Entry::new("rolled_back", actor)
                .with("handler", handler.as_str())
                .with("version", candidate.sha256.clone())
                .with("step", candidate.step + 1)
                .with("reason", why),
        );
        // Counted last: a reader who sees the count finds the rest done.
        self.count_end(handler, &self.app.metrics.rollout_rollbacks);
        Ok(())
    }

    /// Counts a rollout's end (a promotion or a rollback) in `counter` and
    /// clears its step.
    fn count_end(&self, handler: &HandlerName, counter: &prometheus::IntCounterVec) {
        counter.with_label_values(&[handler.as_str()]).inc();
        self.app
            .metrics
            .rollout_step
            .with_label_values(&[handler.as_str()])
            .set(0);
    }

    /// Records `sha` as stable (the old stable becomes previous); `None`:
    /// the configured file's version.
    async fn set_stable(&self, handler: &HandlerName, sha: Option<&str>) {
        let deployments = Arc::clone(&self.app.deployments);
        let (handler, sha) = (handler.clone(), sha.map(str::to_string));
        let _ = tokio::task::spawn_blocking(move || {
            deployments.store.update(&handler, |history| {
                if history.stable != sha {
                    history.previous = history.stable.take();
                }
                history.stable = sha;
            });
        })
        .await;
    }

    /// Puts `handler`'s recorded stable version back to `stable`: the one
    /// just made stable did not load.
    fn restore_stable(&self, handler: &HandlerName, stable: Option<String>) {
        self.app
            .deployments
            .store
            .update(handler, |history| history.stable = stable);
    }

    /// Writes `file` into `handler`'s version store as `sha` (a file write,
    /// so off the runtime's threads).
    async fn stage(
        &self,
        handler: &HandlerName,
        sha: &str,
        file: ComponentFile,
    ) -> Result<(), Refusal> {
        let deployments = Arc::clone(&self.app.deployments);
        let (handler, sha) = (handler.clone(), sha.to_string());
        tokio::task::spawn_blocking(move || deployments.store.stage(&handler, &sha, file.bytes()))
            .await
            .map_err(|join| Refusal::Failed(join.to_string()))?
            .map_err(Refusal::Failed)
    }

    /// Republishes once `handler`'s previous version is no longer kept warm,
    /// so it is unloaded.
    fn schedule_cooling(&self, handler: &HandlerName, after: Duration) {
        let reloader = Arc::clone(&self.reloader);
        let drain = self.app.drain.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            if drain.sleep(after + Duration::from_millis(10)).await {
                let _ = reloader
                    .republish(&format!("{handler}: keep-warm over"))
                    .await;
            }
        });
    }

    async fn publish(&self, cause: &str) -> Result<(), Refusal> {
        match self.reloader.republish(cause).await {
            Outcome::Published(_) => Ok(()),
            Outcome::Rejected(problems) => Err(Refusal::Failed(problems.join("; "))),
            Outcome::Draining => Err(Refusal::Draining),
        }
    }

    fn audit(&self, entry: Entry) {
        self.app.deployments.audit.record(entry);
    }
}

/// A version to deploy.
pub struct Deploy {
    /// The handler it is a version of.
    pub handler: HandlerName,
    /// Its bytes.
    pub file: ComponentFile,
    /// The name pins use (`canary` by default).
    pub name: Option<String>,
    /// How it rolls out.
    pub order: Order,
    /// Who asked.
    pub actor: String,
    /// `deploy` (the admin API) or `file` (a file drop).
    pub source: &'static str,
}

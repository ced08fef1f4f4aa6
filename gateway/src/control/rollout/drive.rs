//! Driving a rollout: canary steps held and judged on the per-version
//! metrics, the blue-green smoke request.
//!
//! Invariant: a driver acts only while its rollout is its handler's
//! current one (checked after every wait), and stops when the gateway
//! drains.

use std::sync::Arc;

use prometheus::core::Metric as _;

use super::{Controller, KEEP_WARM_AFTER_CANARY, SMOKE_LIMIT};
use crate::config::HandlerName;
use crate::config::deploy::{BlueGreenPlan, CanaryPlan};
use crate::deploy::judge::{self, Tally, Verdict};
use crate::deploy::{Candidate, Entry};

impl Controller {
    /// Canary steps: each share is set, held for the interval and judged.
    pub(super) async fn drive_canary(
        self: Arc<Self>,
        handler: HandlerName,
        id: u64,
        plan: CanaryPlan,
    ) {
        let actor = "rollout controller";
        for (step, weight) in plan.steps.iter().copied().enumerate() {
            let Some(candidate) = self.app.deployments.update_candidate(&handler, id, |c| {
                c.step = step;
                c.weight = weight;
            }) else {
                return;
            };
            if self
                .publish(&format!("canary step {}", step + 1))
                .await
                .is_err()
            {
                return;
            }
            self.share(&handler);
            self.app
                .metrics
                .rollout_step
                .with_label_values(&[handler.as_str()])
                .set(step as i64 + 1);
            self.audit(
                Entry::new("rollout_step", actor)
                    .with("handler", handler.as_str())
                    .with("version", candidate.sha256.clone())
                    .with("step", step + 1)
                    .with("weight_percent", f64::from(weight) / 100.0),
            );
            tracing::info!(
                handler = handler.as_str(),
                step = step + 1,
                percent = f64::from(weight) / 100.0,
                "canary step"
            );
            if !self.hold_step(&handler, id, &plan, &candidate).await {
                return;
            }
        }
        let _ = self
            .promote_candidate(&handler, id, actor, KEEP_WARM_AFTER_CANARY)
            .await;
    }

    /// Holds one step until it passes (true) or the rollout ends (false:
    /// rolled back after too many failed checks, or superseded).
    async fn hold_step(
        &self,
        handler: &HandlerName,
        id: u64,
        plan: &CanaryPlan,
        candidate: &Candidate,
    ) -> bool {
        let stable_sha = match self.app.live.load().handler(handler) {
            Some(stable) => stable.hash().as_str().to_string(),
            None => return false,
        };
        let mut since = (
            self.tally(handler, &candidate.sha256),
            self.tally(handler, &stable_sha),
        );
        loop {
            if !self.app.drain.sleep(plan.interval).await {
                return false;
            }
            let Some(current) = self.app.deployments.candidate(handler) else {
                return false;
            };
            if current.id != id {
                return false;
            }
            let canary = self.tally(handler, &candidate.sha256).since(&since.0);
            let stable = self.tally(handler, &stable_sha).since(&since.1);
            match judge::judge(plan, &canary, &stable) {
                Verdict::Wait(why) => {
                    tracing::info!(handler = handler.as_str(), "canary check waits: {why}");
                }
                Verdict::Pass(summary) => {
                    tracing::info!(handler = handler.as_str(), "canary check passed: {summary}");
                    return true;
                }
                Verdict::Fail(summary) => {
                    let failures = self
                        .app
                        .deployments
                        .update_candidate(handler, id, |c| c.failures += 1)
                        .map_or(u32::MAX, |c| c.failures);
                    self.app
                        .metrics
                        .rollout_failed_checks
                        .with_label_values(&[handler.as_str()])
                        .inc();
                    tracing::warn!(
                        handler = handler.as_str(),
                        failures,
                        "canary check failed: {summary}"
                    );
                    self.audit(
                        Entry::new("rollout_check_failed", "rollout controller")
                            .with("handler", handler.as_str())
                            .with("version", candidate.sha256.clone())
                            .with("failures", failures)
                            .with("reason", summary.clone()),
                    );
                    if failures >= plan.max_failures {
                        let why = format!("{failures} failed checks; last: {summary}");
                        let _ = self
                            .pull_back(handler, id, "rollout controller", &why)
                            .await;
                        return false;
                    }
                    since = (
                        self.tally(handler, &candidate.sha256),
                        self.tally(handler, &stable_sha),
                    );
                }
            }
        }
    }

    /// Blue-green: the new version is warm at 0%; smoke-test it, then switch.
    pub(super) async fn drive_blue_green(
        self: Arc<Self>,
        handler: HandlerName,
        id: u64,
        plan: BlueGreenPlan,
    ) {
        if let Some(path) = &plan.smoke
            && let Err(why) = self.smoke(&handler, id, path).await
        {
            tracing::warn!(handler = handler.as_str(), "smoke check failed: {why}");
            let _ = self
                .pull_back(
                    &handler,
                    id,
                    "rollout controller",
                    &format!("smoke check: {why}"),
                )
                .await;
            return;
        }
        let _ = self
            .promote_candidate(&handler, id, "rollout controller", plan.keep_warm)
            .await;
    }

    /// Sends `GET path` to the candidate itself; 2xx within the limit passes.
    async fn smoke(&self, handler: &HandlerName, id: u64, path: &str) -> Result<(), String> {
        use http_body_util::BodyExt as _;
        let candidate = self
            .app
            .deployments
            .candidate(handler)
            .filter(|c| c.id == id)
            .ok_or("the rollout was replaced")?;
        let snapshot = self.app.live.load_full();
        let version = snapshot
            .handlers
            .get(handler)
            .and_then(|deployed| deployed.named(&candidate.name))
            .ok_or("the candidate is not serving")?;
        let body = http_body_util::Empty::<bytes::Bytes>::new().map_err(
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        );
        let request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .header("user-agent", "wasmgate-smoke")
            .body(body)
            .map_err(|error| error.to_string())?;
        let route: Arc<str> = Arc::from("smoke");
        let check = async {
            let response = version
                .handler
                .serve(
                    request,
                    crate::guest::Scheme::Http,
                    &route,
                    &self.app.hub,
                    SMOKE_LIMIT,
                    None,
                )
                .await
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        };
        tokio::time::timeout(SMOKE_LIMIT, check)
            .await
            .map_err(|_| format!("GET {path} took longer than {SMOKE_LIMIT:?}"))?
    }

    /// The requests `version` of `handler` has answered so far, on every
    /// node of the cluster when there is one.
    fn tally(&self, handler: &HandlerName, sha: &str) -> Tally {
        let mut tally = self.local_tally(handler, sha);
        if let Some(cluster) = &self.app.cluster {
            tally.add(&cluster.tallies.others(handler.as_str(), sha));
        }
        tally
    }

    /// The requests `version` of `handler` has answered on this node.
    pub fn local_tally(&self, handler: &HandlerName, sha: &str) -> Tally {
        let short = crate::deploy::short(sha);
        let metrics = &self.app.metrics;
        let count = |outcome| {
            metrics
                .version_requests
                .with_label_values(&[handler.as_str(), short, outcome])
                .get()
        };
        let (ok, errors) = (count("ok"), count("error"));
        let histogram = metrics
            .version_duration
            .with_label_values(&[handler.as_str(), short])
            .metric();
        let buckets = histogram
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|bucket| (bucket.upper_bound(), bucket.cumulative_count()))
            .collect();
        Tally {
            requests: ok + errors,
            errors,
            buckets,
        }
    }
}

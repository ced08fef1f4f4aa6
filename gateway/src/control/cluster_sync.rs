//! Cluster mode's deployment half, on every node: shares the decisions this
//! node's rollout controller makes, applies the other nodes' through it
//! (fetching, verifying and compiling their versions here), and reports
//! this node's per-version counts so a canary is judged on the cluster's
//! traffic.
//!
//! Invariant: a starting node applies every decision already in the bucket
//! (its own included: its state directory may be new) before it says it
//! has caught up, and `/readyz` waits for that; afterwards it applies the
//! others' decisions in the bucket's order. While NATS is away it serves
//! its last state and, back, reads on after the last decision it read, so
//! nothing decided meanwhile is missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use crate::app::App;
use crate::cluster::Cluster;
use crate::cluster::shared::{Decided, Decision, Shared, SharedCandidate};
use crate::cluster::tallies::Report;
use crate::config::HandlerName;
use crate::control::rollout::{Adopted, Controller, Refusal};

/// The wait before trying NATS again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// How many times a version that could not be fetched is tried, waiting
/// 1 s, 2 s, 3 s... in between, before the decision counts as failed.
const FETCH_ATTEMPTS: u32 = 5;
/// How often a node reports its counts of the versions rolling out.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Starts sharing and following, when the gateway is in a cluster.
pub fn start(app: &Arc<App>, controller: &Arc<Controller>) {
    if app.cluster.is_some() {
        tokio::spawn(run(Arc::clone(app), Arc::clone(controller)));
    }
}

async fn run(app: Arc<App>, controller: Arc<Controller>) {
    let Some(cluster) = app.cluster.as_ref() else {
        return;
    };
    let shared = loop {
        match Shared::open(cluster.client(), cluster.name()).await {
            Ok(shared) => break shared,
            Err(error) => {
                tracing::warn!(
                    node = cluster.node(),
                    "cluster: the shared deployment state is out of reach, retrying: {error}"
                );
                if !app.drain.sleep(RETRY).await {
                    return;
                }
            }
        }
    };
    tokio::spawn(share(Arc::clone(&app), shared.clone()));
    tokio::spawn(report(Arc::clone(&app), Arc::clone(&controller)));
    follow(&app, cluster, &controller, &shared).await;
}

/// Reads the decisions, applying the other nodes'; resumes after the last
/// one read whenever the reading breaks off.
async fn follow(app: &App, cluster: &Cluster, controller: &Arc<Controller>, shared: &Shared) {
    let mut after = None;
    loop {
        match shared.watch(after).await {
            Ok(decisions) => {
                if after.is_none() && shared.is_empty().await == Ok(true) {
                    cluster.read_up_to(0, true);
                }
                let mut decisions = std::pin::pin!(decisions);
                loop {
                    let next = tokio::select! {
                        next = decisions.next() => next,
                        () = app.drain.signaled() => return,
                    };
                    match next {
                        Some(Ok(decided)) => {
                            after = Some(decided.revision);
                            apply(app, cluster, controller, shared, decided).await;
                        }
                        Some(Err(error)) => {
                            tracing::warn!(
                                node = cluster.node(),
                                "cluster: reading decisions: {error}"
                            );
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(error) => tracing::warn!(node = cluster.node(), "cluster: {error}"),
        }
        if !app.drain.sleep(RETRY).await {
            return;
        }
    }
}

/// Applies one decision (unless this node made it and has caught up:
/// then it already serves it), counted by outcome.
async fn apply(
    app: &App,
    cluster: &Cluster,
    controller: &Arc<Controller>,
    shared: &Shared,
    decided: Decided,
) {
    let caught_up = decided.pending == 0;
    match &decided.decision {
        Err(reason) => {
            tracing::warn!(node = cluster.node(), "cluster: an entry skipped: {reason}");
            count(app, "failed");
        }
        Ok((_, decision)) if decision.node == cluster.node() && cluster.is_synced() => {}
        Ok((handler, decision)) => {
            let mut attempt = 1;
            let adopted = loop {
                match controller.adopt(handler, decision, shared).await {
                    Err(Refusal::Unreachable(reason)) if attempt < FETCH_ATTEMPTS => {
                        tracing::warn!(
                            node = cluster.node(),
                            handler = handler.as_str(),
                            attempt,
                            "cluster: {reason}; trying again"
                        );
                        if !app.drain.sleep(RETRY * attempt).await {
                            return;
                        }
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            let outcome = match adopted {
                Ok(Adopted::Applied) => "applied",
                Ok(Adopted::Unchanged) => "unchanged",
                Err(refusal) => {
                    tracing::error!(
                        node = cluster.node(),
                        handler = handler.as_str(),
                        "cluster: the decision of node {} not applied; serving as before: {refusal}",
                        decision.node
                    );
                    "failed"
                }
            };
            count(app, outcome);
        }
    }
    cluster.read_up_to(decided.revision, caught_up);
}

/// Writes each decision this node makes to the bucket, after the versions
/// it names; one NATS refuses is tried again.
async fn share(app: Arc<App>, shared: Shared) {
    let Some(cluster) = app.cluster.as_ref() else {
        return;
    };
    loop {
        let handlers = tokio::select! {
            handlers = cluster.next_decided() => handlers,
            () = app.drain.signaled() => return,
        };
        for handler in handlers {
            let decision = decision_of(&app, cluster.node(), &handler);
            let paths: Result<Vec<_>, String> = decision
                .versions()
                .map(|sha| {
                    app.deployments
                        .store
                        .component(&handler, sha)
                        .map(|path| (sha.to_string(), path))
                        .ok_or_else(|| {
                            format!("{} is not in the version store", crate::deploy::short(sha))
                        })
                })
                .collect();
            let paths = match paths {
                Ok(paths) => paths,
                Err(reason) => {
                    tracing::error!(
                        handler = handler.as_str(),
                        "cluster: decision not shared: {reason}"
                    );
                    count(&app, "failed");
                    continue;
                }
            };
            let written = async {
                for (sha, path) in paths {
                    shared.offer(&sha, path).await?;
                }
                shared.decide(&handler, &decision).await
            };
            match written.await {
                Ok(revision) => {
                    count(&app, "shared");
                    tracing::info!(
                        handler = handler.as_str(),
                        revision,
                        "cluster: decision shared"
                    );
                }
                Err(error) => {
                    tracing::warn!(
                        handler = handler.as_str(),
                        "cluster: decision not shared yet, retrying: {error}"
                    );
                    cluster.decided(&handler);
                    if !app.drain.sleep(RETRY).await {
                        return;
                    }
                }
            }
        }
    }
}

/// What `handler` serves here now, as a decision of `node`. It may be read
/// halfway through a change (a promotion sets stable, then clears the
/// candidate); every change notes the handler again once it is done, so
/// the last decision written is whole.
fn decision_of(app: &App, node: &str, handler: &HandlerName) -> Decision {
    Decision {
        node: node.to_string(),
        stable: app.deployments.store.history(handler).stable,
        candidate: app
            .deployments
            .candidate(handler)
            .map(|candidate| SharedCandidate {
                sha256: candidate.sha256,
                name: candidate.name.to_string(),
                weight: candidate.weight,
            }),
    }
}

/// Reports this node's counts of every version of the handlers rolling
/// out, each second while any is.
async fn report(app: Arc<App>, controller: Arc<Controller>) {
    let Some(cluster) = app.cluster.as_ref() else {
        return;
    };
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = app.drain.signaled() => return,
        }
        let snapshot = app.live.load_full();
        let versions: Vec<_> = snapshot
            .handlers
            .iter()
            .filter(|(handler, _)| app.deployments.candidate(handler).is_some())
            .flat_map(|(handler, deployed)| {
                deployed.versions.iter().map(|version| {
                    let sha = version.handler.hash().as_str();
                    (
                        handler.to_string(),
                        sha.to_string(),
                        controller.local_tally(handler, sha),
                    )
                })
            })
            // Past this many versions rolling out at once, the rest are
            // judged on their own node's counts.
            .take(crate::cluster::tallies::MAX_VERSIONS)
            .collect();
        if !versions.is_empty() {
            cluster
                .report(&Report {
                    node: cluster.node().to_string(),
                    versions,
                })
                .await;
        }
    }
}

fn count(app: &App, outcome: &str) {
    app.metrics
        .cluster_decisions
        .with_label_values(&[outcome])
        .inc();
}

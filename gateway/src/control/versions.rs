//! Which versions each handler serves in the next generation, and getting
//! each ready: its bytes (the configured file, or the version store), its
//! signature checked when keys are trusted, compiled or carried over.
//!
//! A handler serves its stable version, plus a candidate while one rolls
//! out, plus its previous version while that is kept warm. The configured
//! file is a source of new versions, not the truth: a file whose hash was
//! already taken in never overrides the stable version a deploy or a
//! rollback chose. A new file replaces stable at once (`rollout` immediate,
//! or no stable yet) or is handed to the rollout controller.
//!
//! Invariant: runs on a blocking thread and only reads shared state; what
//! the plan decides is written back (history, candidate) by `live` once the
//! generation is built, so a version that fails to start changes nothing.

use std::sync::Arc;

use crate::config::deploy::RolloutPolicy;
use crate::config::deploy::SplitPolicy;
use crate::config::{HandlerConfig, HandlerDeploy, HandlerName};
use crate::control::metrics::VersionSeries;
use crate::deploy::signing::{self, PublicKey};
use crate::deploy::{Candidate, Deployments, split};
use crate::guest::{self, CompileCache, ComponentFile, GuestEngine, Handler, LoadError, Loaded};

/// The versions serving one handler, and how requests are split among them.
pub struct Deployed {
    /// Stable first; then the candidate and the previous version, if any.
    pub versions: Vec<Version>,
    /// Stickiness and pin rules.
    pub split: SplitPolicy,
}

/// One version serving a handler.
pub struct Version {
    /// `stable`, `previous`, or the candidate's name.
    pub name: Arc<str>,
    /// The loaded component.
    pub handler: Arc<Handler>,
    /// Its share of the traffic, in basis points.
    pub weight: u32,
    /// Its request series (judged during a canary).
    pub series: VersionSeries,
}

impl Deployed {
    /// The stable version.
    pub fn stable(&self) -> &Arc<Handler> {
        &self.versions[0].handler
    }

    /// The version `name`, if it serves now.
    pub fn named(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|version| &*version.name == name)
    }

    /// The version that serves a request with `headers` from `client`, and
    /// a cookie to set when the split is cookie-sticky and the client had none.
    pub fn place(
        &self,
        headers: &http::HeaderMap,
        client: std::net::IpAddr,
    ) -> (&Version, Option<http::HeaderValue>) {
        if self.versions.len() == 1 {
            return (&self.versions[0], None);
        }
        let names: Vec<&str> = self.versions.iter().map(|v| &*v.name).collect();
        let weights: Vec<u32> = self.versions.iter().map(|v| v.weight).collect();
        let placement = split::place(&self.split, &names, &weights, headers, client);
        (&self.versions[placement.index], placement.set_cookie)
    }
}

/// What to do with one version.
pub enum Plan {
    /// Same bytes, same settings: reuse the running instance of it.
    Carry(Arc<Handler>),
    /// Compiled (or mapped from the cache), ready to start.
    Start(Loaded),
    /// It cannot serve.
    Failed(LoadError),
}

/// The part a version plays.
pub enum Role {
    /// Serves what the others leave.
    Stable,
    /// Rolling out with its share.
    Candidate(Candidate),
    /// Kept loaded at 0% for an instant switch back.
    Previous,
}

/// One version, planned.
pub struct Planned {
    /// Its part.
    pub role: Role,
    /// Its hash, when known.
    pub sha256: Option<String>,
    /// Ready, carried, or failed.
    pub plan: Plan,
    /// A new file's bytes, kept in the store once it serves.
    pub keep: Option<ComponentFile>,
    /// The key that signed it, when keys are trusted.
    pub signed_by: Option<String>,
}

/// One handler's versions for the next generation.
pub struct HandlerPlan {
    /// Stable first.
    pub versions: Vec<Planned>,
    /// The stable version is a new file taking over at once.
    pub swap: bool,
    /// A new file that the handler's rollout policy sends through a rollout.
    pub arrival: Option<String>,
    /// Why the configured file could not be read, when the versions served
    /// did not need it (they come from the store): still reported.
    pub file_error: Option<LoadError>,
}

/// What planning needs from the gateway.
pub struct Context<'a> {
    /// The engine components compile for.
    pub engine: &'a GuestEngine,
    /// Compiled components on disk.
    pub cache: Option<&'a CompileCache>,
    /// Histories and candidates.
    pub deployments: &'a Deployments,
}

/// Plans `name`'s versions: `keys` are the keys it trusts (`None`: no
/// signature needed), `running` what serves it now.
pub fn plan_handler(
    cx: &Context<'_>,
    name: &HandlerName,
    config: &HandlerConfig,
    policy: &HandlerDeploy,
    keys: Option<&[PublicKey]>,
    running: Option<&Deployed>,
) -> HandlerPlan {
    let history = cx.deployments.store.history(name);
    let candidate = cx.deployments.candidate(name);
    let (mut file, mut file_error) = match ComponentFile::read(&config.path) {
        Ok(file) => (Some(file), None),
        Err(error) => (None, Some(error)),
    };
    let file_sha = file.as_ref().map(|file| file.hash.as_str().to_string());
    let fresh = file_sha.as_ref().is_some_and(|sha| {
        history.file.as_ref() != Some(sha)
            && history.stable.as_ref() != Some(sha)
            && candidate.as_ref().map(|c| &c.sha256) != Some(sha)
    });
    let immediate = matches!(policy.rollout, RolloutPolicy::Immediate) || history.stable.is_none();
    let mut plan = HandlerPlan {
        versions: Vec::new(),
        swap: false,
        arrival: None,
        file_error: None,
    };
    let mut stable_sha = history.stable.clone().or_else(|| file_sha.clone());
    if fresh {
        if immediate {
            plan.swap = true;
            stable_sha.clone_from(&file_sha);
        } else {
            plan.arrival.clone_from(&file_sha);
        }
    }
    let loader = VersionLoader {
        cx,
        name,
        config,
        keys,
        running,
    };
    let stable = match stable_sha {
        None => {
            // No history and no readable file: the file's error says why.
            let error = file_error.take().unwrap_or(LoadError::NotWasm);
            Planned {
                role: Role::Stable,
                sha256: None,
                plan: Plan::Failed(error),
                keep: None,
                signed_by: None,
            }
        }
        Some(sha) => {
            let stored = file_sha.as_ref() == Some(&sha)
                || cx.deployments.store.component(name, &sha).is_some();
            if stored {
                loader.load(Role::Stable, &sha, &mut file, plan.swap)
            } else {
                // The chosen version is gone from the store (deleted by
                // hand): the file is the best there is.
                tracing::warn!(
                    handler = name.as_str(),
                    version = crate::deploy::short(&sha),
                    "the stable version is missing from the store; serving the configured file"
                );
                plan.swap = true;
                match file_sha.clone() {
                    Some(file_sha) => loader.load(Role::Stable, &file_sha, &mut file, true),
                    None => Planned {
                        role: Role::Stable,
                        sha256: Some(sha.clone()),
                        plan: Plan::Failed(LoadError::Stored(format!(
                            "{} is missing and the configured file cannot be read",
                            crate::deploy::short(&sha)
                        ))),
                        keep: None,
                        signed_by: None,
                    },
                }
            }
        }
    };
    let stable_sha = stable.sha256.clone();
    plan.versions.push(stable);
    if let Some(candidate) = candidate.filter(|c| Some(&c.sha256) != stable_sha.as_ref()) {
        let sha = candidate.sha256.clone();
        plan.versions
            .push(loader.load(Role::Candidate(candidate), &sha, &mut file, false));
    }
    if let Some(previous) = history.previous.filter(|previous| {
        cx.deployments.is_warm(name)
            && plan
                .versions
                .iter()
                .all(|version| version.sha256.as_ref() != Some(previous))
    }) {
        plan.versions
            .push(loader.load(Role::Previous, &previous, &mut file, false));
    }
    plan.file_error = file_error;
    plan
}

struct VersionLoader<'a> {
    cx: &'a Context<'a>,
    name: &'a HandlerName,
    config: &'a HandlerConfig,
    keys: Option<&'a [PublicKey]>,
    running: Option<&'a Deployed>,
}

impl VersionLoader<'_> {
    /// Gets version `sha` ready: from `file` when it holds it (taken, and
    /// kept for the store when `new`), else from the store.
    fn load(&self, role: Role, sha: &str, file: &mut Option<ComponentFile>, new: bool) -> Planned {
        let mut planned = Planned {
            role,
            sha256: Some(sha.to_string()),
            plan: Plan::Failed(LoadError::NotWasm),
            keep: None,
            signed_by: None,
        };
        let carried = self.running.and_then(|running| {
            running
                .versions
                .iter()
                .find(|version| version.handler.is_same(self.config, sha))
        });
        // A carried version needs its bytes only to check its signature
        // again (the trusted keys may have changed).
        if let (Some(carried), None) = (carried, self.keys) {
            planned.plan = Plan::Carry(Arc::clone(&carried.handler));
            return planned;
        }
        let bytes = match file.take_if(|held| held.hash.as_str() == sha) {
            Some(held) => Ok(held),
            None => self.stored(sha),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(error) => {
                planned.plan = Plan::Failed(error);
                return planned;
            }
        };
        if let Some(keys) = self.keys {
            match signing::verify(bytes.bytes(), keys) {
                Ok(signer) => planned.signed_by = Some(signer),
                Err(refused) => {
                    planned.plan = Plan::Failed(LoadError::Signature(refused));
                    return planned;
                }
            }
        }
        planned.plan = match carried {
            Some(carried) => Plan::Carry(Arc::clone(&carried.handler)),
            None => match guest::component::load(
                self.cx.engine,
                self.cx.cache,
                &bytes,
                self.config.world,
                &self.config.capabilities,
            ) {
                Ok(loaded) => Plan::Start(loaded),
                Err(error) => Plan::Failed(error),
            },
        };
        if new {
            planned.keep = Some(bytes);
        }
        planned
    }

    /// Version `sha` from the store, its bytes checked against its name.
    fn stored(&self, sha: &str) -> Result<ComponentFile, LoadError> {
        let short = crate::deploy::short(sha);
        let path = self
            .cx
            .deployments
            .store
            .component(self.name, sha)
            .ok_or_else(|| LoadError::Stored(format!("{short} is not in the version store")))?;
        let file = ComponentFile::read(&path)?;
        if file.hash.as_str() != sha {
            return Err(LoadError::Stored(format!(
                "{short} was changed on disk (its bytes hash to {})",
                file.hash
            )));
        }
        Ok(file)
    }
}

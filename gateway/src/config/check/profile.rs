//! `[profile.NAME]`: named grants and limits (environment, outbound hosts,
//! files, capabilities, limits) that a handler or component takes with
//! `profile = "NAME"`, and the `files` grants themselves.

use std::collections::BTreeSet;

use super::super::raw;
use super::super::{FileGrant, GatewaySettings, HandlerName, Profile};
use super::Checker;

impl Checker<'_> {
    /// Keeps the profiles for the handlers that name them.
    pub(super) fn profiles(&mut self, raw: std::collections::BTreeMap<String, raw::RawProfile>) {
        for (name, profile) in raw {
            if HandlerName::parse(&name).is_none() {
                self.problems.push(
                    format!("profile.{name}"),
                    "a profile name is lowercase letters, digits, `-` and `_`, starting with a letter",
                );
                continue;
            }
            self.profiles.insert(name, profile);
        }
    }

    /// Each profile's environment, limits and files, typed (what `wasmgate
    /// run --profile` uses); their problems are reported under
    /// `profile.NAME`, whether or not a handler names them.
    pub(super) fn typed_profiles(
        &mut self,
        gateway: &GatewaySettings,
    ) -> std::collections::BTreeMap<String, Profile> {
        let profiles = self.profiles.clone();
        profiles
            .into_iter()
            .map(|(name, raw)| {
                let key = format!("profile.{name}");
                let profile = Profile {
                    env: self.env_grant(&key, raw.env),
                    limits: self.limits(&format!("{key}.limits"), raw.limits, &gateway.limits),
                    files: self.files(&key, raw.files),
                };
                (name, profile)
            })
            .collect()
    }

    /// Adds the named profile's grants to `raw`'s own: lists join (`env =
    /// "all"` on either side wins), a limit or setting the handler leaves out
    /// comes from the profile.
    pub(super) fn apply_profile(&mut self, key: &str, raw: &mut raw::RawHandler) {
        let Some(name) = raw.profile.take() else {
            return;
        };
        let Some(profile) = self.profiles.get(&name).cloned() else {
            self.problems.push(
                format!("{key}.profile"),
                format!("no [profile.{name}] is configured"),
            );
            return;
        };
        raw.env = match (std::mem::take(&mut raw.env), profile.env) {
            (raw::RawEnv::Keys(mut own), raw::RawEnv::Keys(more)) => {
                for key in more {
                    if !own.contains(&key) {
                        own.push(key);
                    }
                }
                raw::RawEnv::Keys(own)
            }
            (raw::RawEnv::Word(word), _) | (_, raw::RawEnv::Word(word)) => raw::RawEnv::Word(word),
        };
        raw.outbound.extend(profile.outbound);
        raw.allow_private = raw.allow_private.or(profile.allow_private);
        let limits = &mut raw.limits;
        limits.timeout = limits.timeout.take().or(profile.limits.timeout);
        limits.memory = limits.memory.take().or(profile.limits.memory);
        limits.body = limits.body.take().or(profile.limits.body);
        limits.concurrency = limits.concurrency.or(profile.limits.concurrency);
        limits.fuel = limits.fuel.or(profile.limits.fuel);
        raw.files.extend(profile.files);
        if raw.capabilities.is_none() {
            raw.capabilities = profile.capabilities;
        }
    }

    /// The `files` grants: absolute guest paths, each once; host directories
    /// relative to the config file.
    pub(super) fn files(&mut self, key: &str, raw: Vec<raw::RawFiles>) -> Vec<FileGrant> {
        let mut seen = BTreeSet::new();
        raw.into_iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                let key = format!("{key}.files[{index}]");
                if !entry.at.starts_with('/') || entry.at.contains('\0') {
                    self.problems.push(
                        format!("{key}.at"),
                        format!(
                            "`{}` is not an absolute path in the guest, e.g. \"/data\"",
                            entry.at
                        ),
                    );
                    return None;
                }
                if !seen.insert(entry.at.clone()) {
                    self.problems.push(
                        format!("{key}.at"),
                        format!("`{}` is mapped twice", entry.at),
                    );
                    return None;
                }
                Some(FileGrant {
                    dir: self.resolve(entry.dir),
                    at: entry.at,
                    write: entry.write,
                })
            })
            .collect()
    }
}

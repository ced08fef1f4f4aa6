//! `[deploy]` and each handler's `split`, `rollout` and `trusted_keys`.

use std::path::PathBuf;

use super::super::deploy::{
    BlueGreenPlan, CanaryPlan, DEFAULT_KEEP_VERSIONS, DeploySettings, HandlerDeploy, RolloutPolicy,
    SplitPolicy, Sticky, check_steps, parse_share,
};
use super::super::raw;
use super::Checker;

impl Checker<'_> {
    pub(in crate::config) fn deploy(&mut self, raw: Option<raw::RawDeploy>) -> DeploySettings {
        let raw = raw.unwrap_or_default();
        let state_dir = match raw.state_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(self.resolve(dir)),
            None => default_state_dir(),
        };
        let audit_log = match raw.audit_log {
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(self.resolve(path)),
            None => state_dir.as_ref().map(|dir| dir.join("audit.log")),
        };
        let keep_versions = self.count(
            "deploy.keep_versions",
            raw.keep_versions,
            DEFAULT_KEEP_VERSIONS,
        );
        let trusted_keys = raw
            .trusted_keys
            .into_iter()
            .map(|path| self.resolve(path))
            .collect();
        DeploySettings {
            state_dir,
            keep_versions: keep_versions.max(1),
            audit_log,
            trusted_keys,
        }
    }

    pub(in crate::config) fn handler_deploy(
        &mut self,
        key: &str,
        split: Option<raw::RawSplit>,
        rollout: Option<raw::RawRollout>,
        trusted_keys: Option<Vec<PathBuf>>,
    ) -> HandlerDeploy {
        HandlerDeploy {
            split: split.map_or_else(SplitPolicy::default, |raw| {
                self.split(&format!("{key}.split"), raw)
            }),
            rollout: rollout.map_or(RolloutPolicy::Immediate, |raw| {
                self.rollout(&format!("{key}.rollout"), raw)
            }),
            trusted_keys: trusted_keys
                .map(|paths| paths.into_iter().map(|path| self.resolve(path)).collect()),
        }
    }

    fn split(&mut self, key: &str, raw: raw::RawSplit) -> SplitPolicy {
        let sticky = match raw.sticky.as_deref() {
            None | Some("request") => Sticky::Request,
            Some("cookie") => Sticky::Cookie,
            Some("client") => Sticky::Client,
            Some(other) => match other
                .strip_prefix("header:")
                .map(http::HeaderName::try_from)
            {
                Some(Ok(name)) => Sticky::Header(name),
                _ => {
                    self.problems.push(
                        format!("{key}.sticky"),
                        format!(
                            "`{other}` is not a stickiness; write \"request\" (default), \
                             \"cookie\", \"client\" or \"header:NAME\""
                        ),
                    );
                    Sticky::Request
                }
            },
        };
        let pin_header = raw.pin_header.and_then(|name| {
            http::HeaderName::try_from(name.as_str())
                .inspect_err(|_| {
                    self.problems.push(
                        format!("{key}.pin_header"),
                        format!("`{name}` is not a header name"),
                    );
                })
                .ok()
        });
        let pin_cookie = raw.pin_cookie.filter(|name| {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !token {
                self.problems.push(
                    format!("{key}.pin_cookie"),
                    format!("`{name}` is not a cookie name (letters, digits, `-`, `_`, `.`)"),
                );
            }
            token
        });
        SplitPolicy {
            sticky,
            pin_header,
            pin_cookie,
        }
    }

    fn rollout(&mut self, key: &str, raw: raw::RawRollout) -> RolloutPolicy {
        let canary_only = [
            ("steps", raw.steps.is_some()),
            ("interval", raw.interval.is_some()),
            ("max_failures", raw.max_failures.is_some()),
            ("min_requests", raw.min_requests.is_some()),
            ("max_error_rate", raw.max_error_rate.is_some()),
            ("max_p99", raw.max_p99.is_some()),
        ];
        let blue_green_only = [
            ("smoke", raw.smoke.is_some()),
            ("keep_warm", raw.keep_warm.is_some()),
        ];
        let mut misplaced = |keys: &[(&str, bool)], strategy: &str| {
            for (name, _) in keys.iter().filter(|(_, set)| *set) {
                self.problems.push(
                    format!("{key}.{name}"),
                    format!("does not apply to strategy = \"{strategy}\""),
                );
            }
        };
        match raw.strategy.as_deref() {
            None | Some("immediate") => {
                misplaced(&canary_only, "immediate");
                misplaced(&blue_green_only, "immediate");
                RolloutPolicy::Immediate
            }
            Some("canary") => {
                misplaced(&blue_green_only, "canary");
                RolloutPolicy::Canary(self.canary(key, raw))
            }
            Some("blue-green") => {
                misplaced(&canary_only, "blue-green");
                let defaults = BlueGreenPlan::default();
                let smoke = raw.smoke.filter(|path| {
                    let valid = path.starts_with('/') && path.parse::<http::Uri>().is_ok();
                    if !valid {
                        self.problems.push(
                            format!("{key}.smoke"),
                            format!("`{path}` is not a path (it starts with `/`)"),
                        );
                    }
                    valid
                });
                RolloutPolicy::BlueGreen(BlueGreenPlan {
                    smoke,
                    keep_warm: self.duration(
                        &format!("{key}.keep_warm"),
                        raw.keep_warm,
                        defaults.keep_warm,
                    ),
                })
            }
            Some(other) => {
                self.problems.push(
                    format!("{key}.strategy"),
                    format!(
                        "`{other}` is not a strategy; write \"immediate\" (default), \
                         \"canary\" or \"blue-green\""
                    ),
                );
                RolloutPolicy::Immediate
            }
        }
    }

    fn canary(&mut self, key: &str, raw: raw::RawRollout) -> CanaryPlan {
        let defaults = CanaryPlan::default();
        let steps = match raw.steps {
            None => defaults.steps.clone(),
            Some(shares) => {
                let parsed: Result<Vec<u32>, String> = shares
                    .iter()
                    .map(|share| parse_share(&share.text()))
                    .collect();
                match parsed.and_then(|steps| check_steps(&steps).map(|()| steps)) {
                    Ok(steps) => steps,
                    Err(reason) => {
                        self.problems.push(format!("{key}.steps"), reason);
                        defaults.steps.clone()
                    }
                }
            }
        };
        // A zero interval is refused by `duration` itself.
        let interval = self.duration(&format!("{key}.interval"), raw.interval, defaults.interval);
        let max_error_rate = match raw.max_error_rate {
            None => defaults.max_error_rate,
            Some(share) => match parse_share(&share.text()) {
                Ok(basis_points) => f64::from(basis_points) / 10_000.0,
                Err(reason) => {
                    self.problems.push(format!("{key}.max_error_rate"), reason);
                    defaults.max_error_rate
                }
            },
        };
        let max_failures = raw.max_failures.unwrap_or(defaults.max_failures);
        if max_failures == 0 || max_failures > 1_000 {
            self.problems.push(
                format!("{key}.max_failures"),
                format!("{max_failures} is not between 1 and 1000"),
            );
        }
        let min_requests = raw.min_requests.unwrap_or(defaults.min_requests);
        if min_requests > 1_000_000 {
            self.problems.push(
                format!("{key}.min_requests"),
                format!("{min_requests} is more than 1000000"),
            );
        }
        CanaryPlan {
            steps,
            interval,
            max_failures: max_failures.clamp(1, 1_000),
            min_requests: min_requests.min(1_000_000),
            max_error_rate,
            max_p99: self.duration(&format!("{key}.max_p99"), raw.max_p99, defaults.max_p99),
        }
    }
}

/// systemd's `StateDirectory=`, else the XDG state directory, else none.
fn default_state_dir() -> Option<PathBuf> {
    super::default_dir("STATE_DIRECTORY", "XDG_STATE_HOME", ".local/state")
}

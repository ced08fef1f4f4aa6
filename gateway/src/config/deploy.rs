//! The typed deployment settings: `[deploy]` (where versions and the audit
//! trail live, which keys are trusted) and each handler's `split` and
//! `rollout` tables.
//!
//! Invariant: every value here is usable as is; the parsers that the admin
//! API shares with the checker ([`parse_steps`], [`parse_share`]) accept
//! exactly what the config file accepts.

use std::path::PathBuf;
use std::time::Duration;

/// One hundred percent, in basis points: weights are whole basis points so
/// that 2.5% is exact and sums never drift.
pub const FULL: u32 = 10_000;

/// `[deploy]`: versions, audit trail and signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySettings {
    /// Where the version store and the deployment state live; `None` keeps
    /// both in memory (nothing survives a restart).
    pub state_dir: Option<PathBuf>,
    /// Versions kept per handler besides the ones serving or kept warm.
    pub keep_versions: usize,
    /// The append-only audit log (one JSON line per operation); `None`: none.
    pub audit_log: Option<PathBuf>,
    /// Public key files; when any is set, only components signed by one of
    /// them load (a handler's own `trusted_keys` replace these).
    pub trusted_keys: Vec<PathBuf>,
}

/// How many versions a handler's history keeps by default.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// A handler's deployment policy (`split`, `rollout`, `trusted_keys`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HandlerDeploy {
    /// How requests are spread over the versions serving at once.
    pub split: SplitPolicy,
    /// What a new version arriving as a file goes through.
    pub rollout: RolloutPolicy,
    /// The keys this handler trusts instead of `[deploy] trusted_keys`.
    pub trusted_keys: Option<Vec<PathBuf>>,
}

/// `[handler.NAME.split]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SplitPolicy {
    /// What keeps one user on one version.
    pub sticky: Sticky,
    /// A request header whose value names the version to serve (A/B by rule).
    pub pin_header: Option<http::HeaderName>,
    /// A cookie whose value names the version to serve.
    pub pin_cookie: Option<String>,
}

/// What a request's place in the split is derived from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sticky {
    /// Each request on its own (a fresh random draw).
    #[default]
    Request,
    /// A cookie the gateway sets on the first response.
    Cookie,
    /// A request header's value (a user id set by an upstream proxy).
    Header(http::HeaderName),
    /// The client's address.
    Client,
}

/// `[handler.NAME.rollout]`: how a new version takes traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RolloutPolicy {
    /// All traffic at once (a plain hot swap).
    #[default]
    Immediate,
    /// Growing shares, each judged on the canary's own metrics.
    Canary(CanaryPlan),
    /// Warm beside the old one, optionally smoke-tested, then all at once.
    BlueGreen(BlueGreenPlan),
}

/// The steps of a canary and what each must show to pass.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryPlan {
    /// The canary's share at each step, in basis points, increasing.
    pub steps: Vec<u32>,
    /// How long each step lasts before it is judged.
    pub interval: Duration,
    /// Failed checks that roll the canary back.
    pub max_failures: u32,
    /// Canary requests a step needs before it can be judged at all.
    pub min_requests: u64,
    /// Largest share of the canary's requests that may fail (5xx).
    pub max_error_rate: f64,
    /// Largest 99th-percentile latency of the canary's requests.
    pub max_p99: Duration,
}

impl Default for CanaryPlan {
    fn default() -> Self {
        Self {
            steps: vec![1_000, 2_500, 5_000],
            interval: Duration::from_secs(60),
            max_failures: 2,
            min_requests: 20,
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(500),
        }
    }
}

/// A blue-green switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueGreenPlan {
    /// A path the new version must answer with 2xx before it takes traffic.
    pub smoke: Option<String>,
    /// How long the old version stays loaded for an instant switch back.
    pub keep_warm: Duration,
}

impl Default for BlueGreenPlan {
    fn default() -> Self {
        Self {
            smoke: None,
            keep_warm: Duration::from_secs(600),
        }
    }
}

/// A share written as `10`, `10%` or `2.5%` (percent), in basis points.
pub fn parse_share(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches('%').trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("`{text}` is not between 0% and 100%"));
    }
    // At most two decimals survive: a basis point is 0.01%.
    Ok((percent * 100.0).round() as u32)
}

/// Canary steps written `10%,25%,50%`: each above the one before, below 100%.
pub fn parse_steps<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<Vec<u32>, String> {
    let steps = parts
        .into_iter()
        .map(parse_share)
        .collect::<Result<Vec<_>, _>>()?;
    check_steps(&steps)?;
    Ok(steps)
}

/// Steps must rise strictly from above 0% to below 100% (promotion is the
/// step to 100%), and there must be at least one and at most 100.
pub fn check_steps(steps: &[u32]) -> Result<(), String> {
    if steps.is_empty() || steps.len() > 100 {
        return Err("give between 1 and 100 steps".into());
    }
    if steps.first().is_some_and(|first| *first == 0) || steps.last() >= Some(&FULL) {
        return Err(
            "each step is above 0% and below 100% (after the last, the canary is promoted)".into(),
        );
    }
    if steps.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err("steps must increase".into());
    }
    Ok(())
}

/// A version's name as a pin header or cookie value and the CLI give it:
/// lowercase letters, digits, `-`, `_`, at most 32; `stable` and `previous`
/// are the gateway's own.
pub fn check_version_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a version name (lowercase letters, digits, `-`, `_`, at most 32)"
        ));
    }
    if matches!(name, "stable" | "previous") {
        return Err(format!("`{name}` is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_basis_points() {
        assert_eq!(parse_share("10%"), Ok(1_000));
        assert_eq!(parse_share("2.5"), Ok(250));
        assert_eq!(parse_share(" 100 % "), Ok(10_000));
        assert!(parse_share("101%").is_err());
        assert!(parse_share("-1").is_err());
        assert!(parse_share("ten").is_err());
        assert!(parse_share("NaN").is_err());
    }

    #[test]
    fn steps_rise_strictly_below_all_traffic() {
        assert_eq!(
            parse_steps(["10%", "25%", "50%"]),
            Ok(vec![1_000, 2_500, 5_000])
        );
        assert!(parse_steps(["25", "10"]).is_err());
        assert!(parse_steps(["10", "10"]).is_err());
        assert!(parse_steps(["0", "10"]).is_err());
        assert!(parse_steps(["50", "100"]).is_err());
        assert!(parse_steps([]).is_err());
    }

    #[test]
    fn version_names_are_plain_and_not_reserved() {
        assert!(check_version_name("b").is_ok());
        assert!(check_version_name("canary-2").is_ok());
        assert!(check_version_name("stable").is_err());
        assert!(check_version_name("B").is_err());
        assert!(check_version_name("").is_err());
        assert!(check_version_name(&"x".repeat(33)).is_err());
    }
}

//! Judging a canary step from the gateway's own per-version metrics.
//!
//! A step is judged on what the canary served during it: its error rate
//! (5xx answers, which include traps and timeouts) and its 99th-percentile
//! latency, each against the plan's bound, loosened to the stable version's
//! own figure over the same window when that is worse (a slow or failing
//! day for everyone is not the canary's fault).
//!
//! Invariant: pure arithmetic on two readings of the same counters; a step
//! with fewer canary requests than `min_requests` is never passed or failed.

use std::time::Duration;

use crate::config::deploy::CanaryPlan;

/// How much worse than stable the canary may be when stable itself is over
/// the plan's bounds (25%).
pub const STABLE_TOLERANCE: f64 = 1.25;

/// One reading of a version's request counters and latency histogram.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Requests answered.
    pub requests: u64,
    /// Of those, 5xx.
    pub errors: u64,
    /// Cumulative latency buckets: (upper bound in seconds, count).
    pub buckets: Vec<(f64, u64)>,
}

impl Tally {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &Self) -> Self {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(index, (bound, count))| {
                let before = earlier.buckets.get(index).map_or(0, |(_, count)| *count);
                (*bound, count.saturating_sub(before))
            })
            .collect();
        Self {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets,
        }
    }

    /// Adds `other`'s counts (another node's reading of the same version);
    /// its buckets count only when they have the same bounds.
    pub fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
        } else if self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(mine, theirs)| mine.0 == theirs.0)
        {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 = mine.1.saturating_add(theirs.1);
            }
        }
    }

    /// Share of requests that failed (0 with no requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile of latency, interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.buckets.last().map(|(_, count)| *count)?;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for (bound, count) in &self.buckets {
            if *count as f64 >= rank {
                let (low_bound, low_count) = lower;
                let within = (*count - low_count).max(1) as f64;
                let seconds = low_bound + (bound - low_bound) * (rank - low_count as f64) / within;
                return Some(Duration::from_secs_f64(seconds.max(0.0)));
            }
            lower = (*bound, *count);
        }
        // Past the last finite bucket: say the last bound.
        Some(Duration::from_secs_f64(lower.0))
    }
}

/// What a step's check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few requests to judge; the step goes on.
    Wait(String),
    /// Within bounds.
    Pass(String),
    /// Out of bounds; why.
    Fail(String),
}

/// Judges the canary's window against the plan, with stable's window beside it.
pub fn judge(plan: &CanaryPlan, canary: &Tally, stable: &Tally) -> Verdict {
    if canary.requests < plan.min_requests {
        return Verdict::Wait(format!(
            "{} canary requests, fewer than the {} a step needs",
            canary.requests, plan.min_requests
        ));
    }
    let error_rate = canary.error_rate();
    let error_bound = plan
        .max_error_rate
        .max(stable.error_rate() * STABLE_TOLERANCE);
    let p99 = canary.quantile(0.99).unwrap_or_default();
    let stable_p99 = stable.quantile(0.99).unwrap_or_default();
    let p99_bound = plan.max_p99.max(stable_p99.mul_f64(STABLE_TOLERANCE));
    let summary = format!(
        "{} requests, {:.2}% errors (bound {:.2}%), p99 {:.2} ms (bound {:.2} ms)",
        canary.requests,
        error_rate * 100.0,
        error_bound * 100.0,
        p99.as_secs_f64() * 1e3,
        p99_bound.as_secs_f64() * 1e3
    );
    if error_rate > error_bound || p99 > p99_bound {
        Verdict::Fail(summary)
    } else {
        Verdict::Pass(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(requests: u64, errors: u64, fast: u64) -> Tally {
        // `fast` within 10 ms, the rest within 1 s.
        Tally {
            requests,
            errors,
            buckets: vec![(0.01, fast), (1.0, requests), (10.0, requests)],
        }
    }

    #[test]
    fn readings_of_several_nodes_add_up() {
        let mut sum = Tally::default();
        sum.add(&tally(100, 1, 90));
        sum.add(&tally(50, 4, 10));
        assert_eq!(sum, tally(150, 5, 100));
        // Buckets of other bounds are not mixed in; the counts still are.
        sum.add(&Tally {
            requests: 10,
            errors: 0,
            buckets: vec![(0.5, 10)],
        });
        assert_eq!(
            (sum.requests, sum.buckets),
            (160, tally(150, 5, 100).buckets)
        );
    }

    fn plan() -> CanaryPlan {
        CanaryPlan {
            min_requests: 20,
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(500),
            ..CanaryPlan::default()
        }
    }

    #[test]
    fn a_quiet_step_is_not_judged() {
        assert!(matches!(
            judge(&plan(), &tally(5, 5, 5), &tally(100, 0, 100)),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn errors_fail_a_step_unless_stable_is_as_bad() {
        let canary = tally(100, 30, 100);
        assert!(matches!(
            judge(&plan(), &canary, &tally(100, 0, 100)),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            judge(&plan(), &canary, &tally(100, 28, 100)),
            Verdict::Pass(_)
        ));
        assert!(matches!(
            judge(&plan(), &tally(100, 1, 100), &tally(100, 0, 100)),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn slowness_fails_a_step_unless_stable_is_as_slow() {
        // Half the canary's requests take up to a second: p99 near 1 s.
        let slow = tally(100, 0, 50);
        assert!(matches!(
            judge(&plan(), &slow, &tally(100, 0, 100)),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            judge(&plan(), &slow, &tally(100, 0, 50)),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let window = tally(150, 10, 150).since(&tally(100, 4, 100));
        assert_eq!(window.requests, 50);
        assert_eq!(window.errors, 6);
        assert_eq!(window.buckets[0], (0.01, 50));
        let p50 = window.quantile(0.5).expect("observed");
        assert!(p50 <= Duration::from_millis(10), "{p50:?}");
        assert_eq!(Tally::default().quantile(0.99), None);
    }
}

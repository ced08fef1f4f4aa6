//! What a resident component's supervisor knows and decides: its state
//! (starting, ready, restarting, failed), its restarts, how its last run
//! ended, and, after each end, whether it restarts (and after how long) or
//! has crash-looped.
//!
//! Invariant: a resident restarts at most `max_restarts` times within its
//! `within` window, each wait twice the one before (from `backoff`, at most
//! 30 s); one more end in the window marks it failed, and a failed resident
//! is never restarted (a new version starts afresh). The state gauges show
//! exactly one state per resident: its serving version's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Resident;
use crate::control::metrics::ResidentMetrics;

/// Where a resident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Loaded, not yet ready.
    Starting,
    /// It signalled readiness (a program printed `READY`; a service has
    /// its instance).
    Ready,
    /// It ended and waits to be started again.
    Restarting,
    /// It crash-looped: no more restarts.
    Failed,
    /// Stopped by the gateway (replaced, removed, drained).
    Stopped,
}

impl State {
    /// Its gauge in [`ResidentMetrics::states`], if it has one.
    fn gauge_index(self) -> Option<usize> {
        match self {
            Self::Starting => Some(0),
            Self::Ready => Some(1),
            Self::Restarting => Some(2),
            Self::Failed => Some(3),
            Self::Stopped => None,
        }
    }

    /// Its name in `/status` and in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// How one run of a resident ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The program returned or exited with this code.
    Code(i32),
    /// It trapped: the trap's message.
    Trap(String),
    /// It used up its CPU budget in one slice.
    OutOfFuel(u64),
}

impl Exit {
    /// How a run that failed with `error` ended; `fuel` is its budget per slice.
    pub(super) fn from_error(error: &wasmtime::Error, fuel: Option<u64>) -> Self {
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return Self::Code(exit.0);
        }
        if super::host::is_out_of_fuel(error) {
            return Self::OutOfFuel(fuel.unwrap_or(u64::MAX));
        }
        Self::Trap(super::host::trap_summary(error))
    }

    fn counter<'a>(&self, metrics: &'a ResidentMetrics) -> &'a prometheus::IntCounter {
        match self {
            Self::Code(_) => &metrics.exited,
            Self::Trap(_) => &metrics.trapped,
            Self::OutOfFuel(_) => &metrics.out_of_fuel,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with code {code}"),
            Self::Trap(message) => write!(f, "trapped: {message}"),
            Self::OutOfFuel(fuel) => write!(
                f,
                "used up its CPU budget of {fuel} fuel in one {}-second slice",
                SLICE.as_secs()
            ),
        }
    }
}

/// The period a resident's CPU budget (`limits.fuel`) is given for.
pub const SLICE: Duration = Duration::from_secs(1);

/// What follows an end.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Start it again after this wait.
    RestartIn(Duration),
    /// It crash-looped.
    Failed,
}

/// One resident version's supervision record, shared by its supervisor and
/// whoever reports on it.
pub struct Supervision {
    name: Arc<str>,
    policy: Resident,
    inner: Mutex<Record>,
    metrics: ResidentMetrics,
}

struct Record {
    state: State,
    restarts: u32,
    /// When each restart in the window happened.
    recent: VecDeque<Instant>,
    last_exit: Option<(SystemTime, Exit)>,
}

/// What `/status` shows of a resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its state.
    pub state: State,
    /// Restarts since this version started.
    pub restarts: u32,
    /// How its last run ended, and when.
    pub last_exit: Option<(SystemTime, String)>,
    /// Whether `/readyz` waits for it.
    pub required: bool,
}

impl Supervision {
    /// A record for a resident version about to start.
    pub fn new(name: Arc<str>, policy: Resident, metrics: ResidentMetrics) -> Self {
        let supervision = Self {
            name,
            policy,
            inner: Mutex::new(Record {
                state: State::Starting,
                restarts: 0,
                recent: VecDeque::new(),
                last_exit: None,
            }),
            metrics,
        };
        supervision.gauge(State::Starting);
        supervision
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shows `state`.
    fn gauge(&self, state: State) {
        for (index, gauge) in self.metrics.states.iter().enumerate() {
            gauge.set(i64::from(state.gauge_index() == Some(index)));
        }
    }

    /// Moves it to `state` (a failed resident stays failed).
    pub fn set(&self, state: State) {
        let mut record = self.record();
        if record.state == State::Failed || record.state == state {
            return;
        }
        record.state = state;
        drop(record);
        // A stopped version leaves the gauges to the version that replaced
        // it (both have the same labels).
        if state != State::Stopped {
            self.gauge(state);
        }
    }

    /// Its state now.
    pub fn state(&self) -> State {
        self.record().state
    }

    /// Records that a run ended with `exit` (at `now`), logs it, and says
    /// what follows.
    pub fn ended(&self, exit: Exit, now: Instant) -> Next {
        exit.counter(&self.metrics).inc();
        let mut record = self.record();
        let window = self.policy.within;
        while record
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) > window)
        {
            record.recent.pop_front();
        }
        record.last_exit = Some((SystemTime::now(), exit.clone()));
        let recent = u32::try_from(record.recent.len()).unwrap_or(u32::MAX);
        if recent >= self.policy.max_restarts {
            record.state = State::Failed;
            drop(record);
            self.gauge(State::Failed);
            tracing::error!(
                component = &*self.name,
                "resident {exit}; it was restarted {recent} times within {}, so it is marked failed and not restarted (a new version starts afresh)",
                humantime::format_duration(window)
            );
            return Next::Failed;
        }
        let delay = self.policy.delay(recent);
        record.recent.push_back(now);
        record.restarts += 1;
        record.state = State::Restarting;
        drop(record);
        self.gauge(State::Restarting);
        self.metrics.restarts.inc();
        tracing::warn!(
            component = &*self.name,
            "resident {exit}; restarting in {}",
            humantime::format_duration(delay)
        );
        Next::RestartIn(delay)
    }

    /// What `/status` shows.
    pub fn report(&self) -> Report {
        let record = self.record();
        Report {
            state: record.state,
            restarts: record.restarts,
            last_exit: record
                .last_exit
                .as_ref()
                .map(|(at, exit)| (*at, exit.to_string())),
            required: self.policy.required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervision(max_restarts: u32) -> Supervision {
        let metrics = crate::control::metrics::Metrics::new(prometheus::Registry::new())
            .expect("metrics")
            .resident("bot");
        Supervision::new(
            Arc::from("bot"),
            Resident {
                required: true,
                max_restarts,
                within: Duration::from_secs(10),
                backoff: Duration::from_millis(100),
            },
            metrics,
        )
    }

    #[test]
    fn restarts_back_off_then_a_crash_loop_fails_it() {
        let supervision = supervision(3);
        let start = Instant::now();
        let trap = || Exit::Trap("boom".into());
        assert_eq!(
            supervision.ended(trap(), start),
            Next::RestartIn(Duration::from_millis(100))
        );
        assert_eq!(
            supervision.ended(Exit::Code(1), start),
            Next::RestartIn(Duration::from_millis(200))
        );
        assert_eq!(
            supervision.ended(trap(), start),
            Next::RestartIn(Duration::from_millis(400))
        );
        assert_eq!(supervision.state(), State::Restarting);
        assert_eq!(supervision.ended(trap(), start), Next::Failed);
        let report = supervision.report();
        assert_eq!(report.state, State::Failed);
        assert_eq!(report.restarts, 3);
        assert_eq!(
            report.last_exit.map(|(_, exit)| exit),
            Some("trapped: boom".into())
        );
        // Failed is final for this version.
        supervision.set(State::Ready);
        assert_eq!(supervision.state(), State::Failed);
    }

    #[test]
    fn ends_outside_the_window_do_not_count() {
        let supervision = supervision(1);
        let start = Instant::now();
        assert!(matches!(
            supervision.ended(Exit::Code(0), start),
            Next::RestartIn(_)
        ));
        let later = start + Duration::from_secs(11);
        assert_eq!(
            supervision.ended(Exit::Code(0), later),
            Next::RestartIn(Duration::from_millis(100))
        );
        assert_eq!(supervision.ended(Exit::Code(0), later), Next::Failed);
    }
}

//! A circuit breaker: after repeated failures callers fail fast instead of
//! waiting on a backend that is down, and after a cool-down one probe is let
//! through to find out whether it is back.
//!
//! The breaker is pure state over an injectable [`Clock`], so tests move time
//! forward instead of sleeping. It performs no I/O: the caller makes the call and
//! reports its outcome.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use opstore_domain::breaker::{Admission, BreakerConfig, CircuitBreaker};
//! use opstore_domain::{ManualClock, Timestamp};
//!
//! let clock = ManualClock::new(Timestamp::from_micros(0));
//! let breaker = CircuitBreaker::new(
//!     BreakerConfig::five_failures(Duration::from_secs(30)),
//!     Arc::new(clock.clone()),
//! );
//! for _ in 0..5 {
//!     assert_eq!(breaker.admit(), Admission::Allowed);
//!     breaker.record_failure();
//! }
//! assert!(matches!(breaker.admit(), Admission::Rejected { .. }));
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(breaker.admit(), Admission::Allowed);
//! breaker.record_success();
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::time::{Clock, Timestamp};

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (at least 1 to be useful; 0
    /// behaves as 1).
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before it lets one probe through.
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// The job-automation backend's settings: open after 5 consecutive failures,
    /// probe again after `cool_down`.
    pub fn five_failures(cool_down: Duration) -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down,
        }
    }
}

/// State of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; consecutive failures are counted.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Calls are rejected until the cool-down has passed.
    Open {
        /// When the circuit opened.
        since: Timestamp,
        /// When a probe is allowed again (`since` plus the cool-down).
        until: Timestamp,
    },
    /// One probe is in flight; other calls are rejected until it reports.
    HalfOpen,
}

/// Whether a call may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, then report the outcome.
    Allowed,
    /// The circuit is open (or a probe is in flight): fail fast.
    Rejected {
        /// When a probe is allowed again; `None` while a probe is in flight.
        retry_at: Option<Timestamp>,
        /// Time left in the cool-down; zero while a probe is in flight.
        retry_in: Duration,
    },
}

/// A thread-safe circuit breaker driven by an injectable clock.
///
/// Closed, it counts consecutive failures and opens at
/// [`BreakerConfig::failure_threshold`]. Open, it rejects calls until the
/// cool-down has passed; the next call then half-opens it and is admitted as the
/// only probe. The probe's success closes the circuit; its failure opens it for
/// another cool-down.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        CircuitBreaker {
            config,
            clock,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    /// Asks to make a call. An open circuit whose cool-down has passed turns
    /// half-open and admits exactly this one call as the probe.
    pub fn admit(&self) -> Admission {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::HalfOpen => Admission::Rejected {
                retry_at: None,
                retry_in: Duration::ZERO,
            },
            BreakerState::Open { until, .. } => {
                let now = self.clock.now();
                if now >= until {
                    *state = BreakerState::HalfOpen;
                    Admission::Allowed
                } else {
                    Admission::Rejected {
                        retry_at: Some(until),
                        retry_in: until.since(now),
                    }
                }
            }
        }
    }

    /// Reports a successful call: the circuit closes.
    pub fn record_success(&self) {
        *self.lock() = BreakerState::Closed { failures: 0 };
    }

    /// Reports a failed call: the threshold-th consecutive failure opens the
    /// circuit, and a failed probe reopens it for another cool-down. A failure
    /// reported while already open (a call admitted before the circuit opened)
    /// leaves the running cool-down as it is.
    pub fn record_failure(&self) {
        let mut state = self.lock();
        let now = self.clock.now();
        let open = BreakerState::Open {
            since: now,
            until: now.add(self.config.cool_down),
        };
        *state = match *state {
            BreakerState::Closed { failures }
                if failures.saturating_add(1) < self.config.failure_threshold =>
            {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            BreakerState::Closed { .. } | BreakerState::HalfOpen => open,
            already @ BreakerState::Open { .. } => already,
        };
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        // The state is a plain value, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn breaker(threshold: u32) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000_000));
        let b = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: threshold,
                cool_down: Duration::from_secs(30),
            },
            Arc::new(clock.clone()),
        );
        (b, clock)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (b, clock) = breaker(5);
        for _ in 0..4 {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 4 });
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        let until = clock.now().add(Duration::from_secs(30));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                since: clock.now(),
                until
            }
        );
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_at: Some(until),
                retry_in: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn five_failures_config_opens_on_the_fifth() {
        let clock = ManualClock::new(Timestamp::from_micros(0));
        let b = CircuitBreaker::new(
            BreakerConfig::five_failures(Duration::from_secs(1)),
            Arc::new(clock),
        );
        for _ in 0..4 {
            b.record_failure();
        }
        assert!(matches!(b.state(), BreakerState::Closed { .. }));
        b.record_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let (b, _) = breaker(3);
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
    }

    #[test]
    fn half_opens_after_cool_down_and_admits_one_probe() {
        let (b, clock) = breaker(3);
        for _ in 0..3 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(10));
        assert!(matches!(
            b.admit(),
            Admission::Rejected { retry_in, retry_at: Some(_) } if retry_in == Duration::from_secs(20)
        ));
        clock.advance(Duration::from_secs(19));
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.admit(), Admission::Allowed);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_at: None,
                retry_in: Duration::ZERO
            }
        );
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cool_down() {
        let (b, clock) = breaker(3);
        for _ in 0..3 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        assert_eq!(
            b.state(),
            BreakerState::Open {
                since: clock.now(),
                until: clock.now().add(Duration::from_secs(30))
            }
        );
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_late_failure_while_open_keeps_the_cool_down() {
        let (b, clock) = breaker(1);
        b.record_failure();
        let opened = b.state();
        clock.advance(Duration::from_secs(10));
        b.record_failure();
        assert_eq!(b.state(), opened);
    }

    #[test]
    fn a_zero_threshold_opens_on_the_first_failure() {
        let (b, _) = breaker(0);
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }
}

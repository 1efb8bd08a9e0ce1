//! The health check's circuit breaker: after N consecutive failed probes it stops
//! probing a dead cluster for a cool-down, then lets one probe through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_domain::{Clock, Timestamp};

use crate::config::BreakerConfig;

/// State of the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Probes run; failures are counted.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Probes are refused until the cool-down has passed.
    Open {
        /// When the circuit opened.
        since: Timestamp,
    },
    /// One trial probe is running; its outcome closes or re-opens the circuit.
    HalfOpen,
}

/// Whether a probe may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run the probe.
    Allowed,
    /// Do not: the circuit is open; retry after this long.
    Rejected {
        /// Time left in the cool-down (zero when a trial probe is already running).
        retry_in: Duration,
    },
}

/// A circuit breaker driven by an injectable clock.
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

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
            .lock()
            .map(|s| *s)
            .unwrap_or(BreakerState::HalfOpen)
    }

    /// Asks to run a probe; an open circuit past its cool-down half-opens.
    pub fn admit(&self) -> Admission {
        let Ok(mut state) = self.state.lock() else {
            return Admission::Allowed;
        };
        match *state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::HalfOpen => Admission::Rejected {
                retry_in: Duration::ZERO,
            },
            BreakerState::Open { since } => {
                let elapsed = self.clock.now().since(since);
                if elapsed >= self.config.cool_down {
                    *state = BreakerState::HalfOpen;
                    Admission::Allowed
                } else {
                    Admission::Rejected {
                        retry_in: self.config.cool_down - elapsed,
                    }
                }
            }
        }
    }

    /// Records a successful probe: the circuit closes.
    pub fn record_success(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = BreakerState::Closed { failures: 0 };
        }
    }

    /// Records a failed probe: opens after `failure_threshold` in a row, or at
    /// once when the trial probe of a half-open circuit fails.
    pub fn record_failure(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = self.clock.now();
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            BreakerState::Closed { .. } | BreakerState::HalfOpen => {
                BreakerState::Open { since: now }
            }
            open @ BreakerState::Open { .. } => open,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::ManualClock;

    fn breaker() -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000_000));
        let b = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(30),
            },
            Arc::new(clock.clone()),
        );
        (b, clock)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (b, _) = breaker();
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_in: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let (b, _) = breaker();
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
    }

    #[test]
    fn half_opens_after_cool_down_and_lets_one_probe_through() {
        let (b, clock) = breaker();
        for _ in 0..3 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_in: Duration::from_secs(20)
            }
        );
        clock.advance(Duration::from_secs(20));
        assert_eq!(b.admit(), Admission::Allowed);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_in: Duration::ZERO
            }
        );
    }

    #[test]
    fn half_open_closes_on_success_and_reopens_on_failure() {
        let (b, clock) = breaker();
        for _ in 0..3 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open { since: clock.now() });
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }
}

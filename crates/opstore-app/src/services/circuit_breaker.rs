//! A circuit breaker for health probes: after repeated failures callers fail fast
//! instead of waiting on a backend that is down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_domain::{Clock, Timestamp};

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
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
    /// Calls pass; counts consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Calls are rejected until the instant.
    Open {
        /// When a probe is allowed again.
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
        /// When to try again, if known.
        retry_at: Option<Timestamp>,
    },
}

/// A thread-safe circuit breaker driven by an injectable clock.
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
        *self.lock()
    }

    /// Asks to make a call. An open circuit whose cool-down has passed turns
    /// half-open and admits exactly this one call as the probe.
    pub fn admit(&self) -> Admission {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::HalfOpen => Admission::Rejected { retry_at: None },
            BreakerState::Open { until } if self.clock.now() >= until => {
                *state = BreakerState::HalfOpen;
                Admission::Allowed
            }
            BreakerState::Open { until } => Admission::Rejected {
                retry_at: Some(until),
            },
        }
    }

    /// Reports a successful call: the circuit closes.
    pub fn record_success(&self) {
        *self.lock() = BreakerState::Closed { failures: 0 };
    }

    /// Reports a failed call: a failed probe reopens the circuit; the threshold-th
    /// consecutive failure opens it.
    pub fn record_failure(&self) {
        let mut state = self.lock();
        let open = BreakerState::Open {
            until: self.clock.now().add(self.config.cool_down),
        };
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.config.failure_threshold => {
                open
            }
            BreakerState::Closed { failures } => BreakerState::Closed {
                failures: failures + 1,
            },
            BreakerState::HalfOpen | BreakerState::Open { .. } => open,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // The state is a plain value, valid even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::ManualClock;

    fn breaker() -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
        let b = CircuitBreaker::new(
            BreakerConfig::five_failures(Duration::from_secs(30)),
            Arc::new(clock.clone()),
        );
        (b, clock)
    }

    #[test]
    fn opens_after_five_consecutive_failures() {
        let (b, _) = breaker();
        for _ in 0..4 {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 4 });
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(matches!(
            b.admit(),
            Admission::Rejected { retry_at: Some(_) }
        ));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let (b, _) = breaker();
        for _ in 0..4 {
            b.record_failure();
        }
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
    }

    #[test]
    fn half_opens_after_cool_down_and_admits_one_probe() {
        let (b, clock) = breaker();
        for _ in 0..5 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(29));
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.admit(), Admission::Allowed);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admission::Rejected { retry_at: None });
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cool_down() {
        let (b, clock) = breaker();
        for _ in 0..5 {
            b.record_failure();
        }
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(), Admission::Allowed);
        b.record_failure();
        let BreakerState::Open { until } = b.state() else {
            panic!("expected open")
        };
        assert_eq!(until, clock.now().add(Duration::from_secs(30)));
    }
}

//! Metrics and counters of a processor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};

/// Metric names, all labelled `processor`, `collection` and the caller's labels.
pub mod names {
    /// Counter: events the handler finished successfully.
    pub const PROCESSED: &str = "opstore_processor_events_processed_total";
    /// Counter: handler attempts that returned an error.
    pub const FAILED: &str = "opstore_processor_handler_failures_total";
    /// Counter: retries scheduled after a failed attempt.
    pub const RETRIED: &str = "opstore_processor_retries_total";
    /// Counter: events stored in the dead-letter collection.
    pub const DEAD_LETTERED: &str = "opstore_processor_dead_lettered_total";
    /// Histogram: seconds per handler attempt.
    pub const HANDLER_SECONDS: &str = "opstore_processor_handler_duration_seconds";
    /// Gauge: seconds between an event's commit and the end of its handling.
    pub const LAG_SECONDS: &str = "opstore_processor_lag_seconds";
}

/// Metric handles, registered once per processor with the recorder installed at
/// construction time.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub processed: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub handler_seconds: Histogram,
    pub lag_seconds: Gauge,
}

impl Metrics {
    pub fn new(processor: &str, collection: &str, extra: &[(String, String)]) -> Self {
        let mut labels = vec![
            Label::new("processor", processor.to_owned()),
            Label::new("collection", collection.to_owned()),
        ];
        labels.extend(extra.iter().map(|(k, v)| Label::new(k.clone(), v.clone())));
        Metrics {
            processed: metrics::counter!(names::PROCESSED, labels.clone()),
            failed: metrics::counter!(names::FAILED, labels.clone()),
            retried: metrics::counter!(names::RETRIED, labels.clone()),
            dead_lettered: metrics::counter!(names::DEAD_LETTERED, labels.clone()),
            handler_seconds: metrics::histogram!(names::HANDLER_SECONDS, labels.clone()),
            lag_seconds: metrics::gauge!(names::LAG_SECONDS, labels),
        }
    }

    pub fn lag(&self, lag: Duration) {
        self.lag_seconds.set(lag.as_secs_f64());
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub handled: AtomicU64,
    pub failures: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub acknowledged: AtomicU64,
    pub checkpoints: AtomicU64,
}

/// Live counters of a processor, shared with its handle.
#[derive(Debug, Clone, Default)]
pub struct ProcessorStats(pub(crate) Arc<Counts>);

impl ProcessorStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        StatsSnapshot {
            handled: c.handled.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of a processor since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Events the handler finished successfully.
    pub handled: u64,
    /// Handler attempts that failed.
    pub failures: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Events stored as dead letters.
    pub dead_lettered: u64,
    /// Events the processor counts as done (handled or dead-lettered) and may
    /// checkpoint past once everything before them is done too.
    pub acknowledged: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

//! Configuration of event processors.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use opstore_domain::eval::get_path;
use opstore_domain::{ChangeEvent, Filter, Schema, StartAt, Value};

/// Where a processor that has no stored checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Only changes committed after the processor starts.
    Now,
    /// The oldest change the feed still retains.
    Beginning,
}

impl StartFrom {
    pub(crate) fn start_at(self) -> StartAt {
        match self {
            StartFrom::Now => StartAt::Now,
            StartFrom::Beginning => StartAt::Beginning,
        }
    }
}

/// Bounded retries with exponential backoff and jitter.
///
/// The n-th retry waits `initial_delay * 2^(n-1)`, capped at `max_delay`, plus a
/// random jitter of up to the same amount again, so retrying processors spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means one attempt only.
    pub max_retries: u32,
    /// Delay before the first retry (before jitter).
    pub initial_delay: Duration,
    /// Largest delay between two attempts (before jitter).
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// `max_retries` retries, starting at `initial_delay` and doubling up to `max_delay`.
    pub fn exponential(max_retries: u32, initial_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            max_retries,
            initial_delay,
            max_delay,
        }
    }

    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy::exponential(0, Duration::ZERO, Duration::ZERO)
    }

    /// A fresh backoff sequence for one event.
    pub(crate) fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay.max(self.initial_delay))
            .with_max_times(usize::try_from(self.max_retries).unwrap_or(usize::MAX))
            .with_jitter()
            .build()
    }

    /// An endless backoff sequence, for reconnecting to the feed.
    pub(crate) fn endless_backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay.max(self.initial_delay))
            .without_max_times()
            .with_jitter()
            .build()
    }
}

/// What happens to an event whose retries are exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Store it in the dead-letter collection and continue with the next event.
    DeadLetter,
    /// Stop the processor; the checkpoint stays before the failed event, so a
    /// restart delivers it again. For handlers that must not skip anything.
    Stop,
}

/// When the checkpoint is written. A graceful stop always writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Write after this many finished events (`None`: not by count).
    pub every_events: Option<NonZeroU32>,
    /// Write when this much time passed since the last write and there is
    /// progress to save (`None`: not by time).
    pub every: Option<Duration>,
}

impl CheckpointPolicy {
    /// After every finished event: the fewest redeliveries, the most writes.
    pub fn every_event() -> Self {
        CheckpointPolicy {
            every_events: Some(NonZeroU32::MIN),
            every: None,
        }
    }

    /// After `events` finished events or `interval`, whichever comes first.
    pub fn every(events: NonZeroU32, interval: Duration) -> Self {
        CheckpointPolicy {
            every_events: Some(events),
            every: Some(interval),
        }
    }
}

/// What a processor does when its checkpoint is older than the feed's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredTokenPolicy {
    /// Stop with the `ResumeTokenExpired` error, for an operator to decide.
    Fail,
    /// Log a warning and continue from the current end of the feed; the changes
    /// in between are not delivered.
    RestartFromNow,
}

/// Configuration of an [`EventProcessor`](super::EventProcessor) and of a
/// [`QueueEventProcessor`](super::QueueEventProcessor).
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Unique processor name: the checkpoint key, the `processor` of its dead
    /// letters and the `processor` metric label.
    pub name: String,
    /// The watched collection.
    pub schema: &'static Schema,
    /// Only changes whose document matches (deletes carry no document and only
    /// reach unfiltered processors).
    pub filter: Option<Filter>,
    /// Where to start without a checkpoint.
    pub start: StartFrom,
    /// Handler retries.
    pub retry: RetryPolicy,
    /// What to do when retries are exhausted.
    pub failure_mode: FailureMode,
    /// When to write the checkpoint.
    pub checkpoint: CheckpointPolicy,
    /// What to do when the checkpoint is too old for the feed.
    pub on_expired_token: ExpiredTokenPolicy,
    /// Extra labels on every metric, e.g. `("module", "quarantine")`.
    pub labels: Vec<(String, String)>,
}

impl ProcessorConfig {
    /// A processor named `name` over `schema` that starts at `start` without a
    /// checkpoint. The other fields start as: no filter; 3 retries from 100 ms
    /// doubling to 10 s; dead-letter on exhaustion; checkpoint every 100 events
    /// or every second; fail on an expired checkpoint; no extra labels.
    pub fn new(name: impl Into<String>, schema: &'static Schema, start: StartFrom) -> Self {
        ProcessorConfig {
            name: name.into(),
            schema,
            filter: None,
            start,
            retry: RetryPolicy::exponential(3, Duration::from_millis(100), Duration::from_secs(10)),
            failure_mode: FailureMode::DeadLetter,
            checkpoint: CheckpointPolicy::every(
                NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
                Duration::from_secs(1),
            ),
            on_expired_token: ExpiredTokenPolicy::Fail,
            labels: Vec::new(),
        }
    }
}

/// How a [`QueueEventProcessor`](super::QueueEventProcessor) assigns events to
/// workers. Events with the same partition key go to the same worker and are
/// handled in feed order; different keys run in parallel.
#[derive(Clone)]
pub enum PartitionKey {
    /// The changed document's key.
    DocumentKey,
    /// The value at a dotted path of the document (e.g. `healthevent.nodename`);
    /// events without a document or without the field fall back to the
    /// document key.
    Field(String),
    /// A caller-supplied function.
    Custom(Arc<dyn Fn(&ChangeEvent) -> String + Send + Sync>),
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionKey::DocumentKey => f.write_str("DocumentKey"),
            PartitionKey::Field(path) => f.debug_tuple("Field").field(path).finish(),
            PartitionKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartitionKey {
    /// The partition key of `event`.
    pub fn key_of(&self, event: &ChangeEvent) -> String {
        match self {
            PartitionKey::DocumentKey => event.key.clone(),
            PartitionKey::Field(path) => {
                match event.document.as_ref().and_then(|d| get_path(d, path)) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => event.key.clone(),
                }
            }
            PartitionKey::Custom(f) => f(event),
        }
    }
}

/// Shape of a [`QueueEventProcessor`](super::QueueEventProcessor)'s worker pool.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Number of workers.
    pub workers: NonZeroUsize,
    /// Events waiting per worker; when a worker's queue is full the processor
    /// stops reading the feed until it drains (backpressure).
    pub queue_capacity: NonZeroUsize,
    /// Which worker an event goes to.
    pub partition: PartitionKey,
}

impl QueueConfig {
    /// The index of the worker that handles `event`: a stable hash of its
    /// partition key modulo the number of workers.
    pub fn worker_of(&self, event: &ChangeEvent) -> usize {
        let mut hasher = DefaultHasher::new();
        self.partition.key_of(event).hash(&mut hasher);
        let workers = self.workers.get() as u64;
        usize::try_from(hasher.finish() % workers).unwrap_or(0)
    }
}

//! One event through the handler: retries with backoff, then the failure mode.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{ChangeEvent, Clock, Repository};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::ProcessorError;
use super::config::{FailureMode, RetryPolicy};
use super::handler::{EventHandler, HandlerError};
use super::telemetry::{Metrics, ProcessorStats};

/// How handling one event ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The handler succeeded.
    Handled,
    /// Retries ran out and the event is stored as a dead letter.
    DeadLettered,
    /// Retries ran out in [`FailureMode::Stop`].
    Failed { attempts: u32, error: HandlerError },
    /// Stop was requested while waiting to retry; the event is not done.
    Interrupted,
}

/// Everything needed to handle an event, shared by a processor's workers.
pub(crate) struct Dispatcher {
    pub name: Arc<str>,
    pub handler: Arc<dyn EventHandler>,
    pub retry: RetryPolicy,
    pub failure_mode: FailureMode,
    pub dead_letters: Arc<dyn Repository<DeadLetter>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub stats: ProcessorStats,
}

impl Dispatcher {
    /// Handles `event` under the retry policy. A handler call in progress is
    /// never cut off; `cancel` only interrupts the waits between attempts.
    /// Returns an error only when a dead letter cannot be stored.
    pub async fn dispatch(
        &self,
        event: &ChangeEvent,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ProcessorError> {
        let span = tracing::debug_span!(
            "handle_event",
            processor = %self.name,
            collection = %event.collection,
            key = %event.key,
            op = ?event.op,
        );
        self.dispatch_inner(event, cancel).instrument(span).await
    }

    async fn dispatch_inner(
        &self,
        event: &ChangeEvent,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ProcessorError> {
        let mut backoff = self.retry.backoff();
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let started = Instant::now();
            // A panicking handler is a failed attempt, not a dead processor.
            let result = AssertUnwindSafe(self.handler.handle(event))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(HandlerError::new(panic_message(&*panic))));
            self.metrics
                .handler_seconds
                .record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => {
                    self.metrics.processed.increment(1);
                    ProcessorStats::add(&self.stats.0.handled);
                    self.metrics.lag(self.clock.now().since(event.at));
                    return Ok(Outcome::Handled);
                }
                Err(error) => error,
            };
            self.metrics.failed.increment(1);
            ProcessorStats::add(&self.stats.0.failures);
            let delay = if error.is_permanent() {
                None
            } else {
                backoff.next()
            };
            let Some(delay) = delay else {
                return self.exhausted(event, attempts, error, cancel).await;
            };
            warn!(attempt = attempts, ?delay, error = %error.chain(), "handler failed; retrying");
            self.metrics.retried.increment(1);
            ProcessorStats::add(&self.stats.0.retries);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Outcome::Interrupted),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn exhausted(
        &self,
        event: &ChangeEvent,
        attempts: u32,
        error: HandlerError,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ProcessorError> {
        if self.failure_mode == FailureMode::Stop {
            warn!(attempts, error = %error.chain(), "handler failed; stopping the processor");
            return Ok(Outcome::Failed { attempts, error });
        }
        let letter = DeadLetter {
            id: uuid::Uuid::new_v4().simple().to_string(),
            processor: self.name.to_string(),
            collection: event.collection.clone(),
            key: event.key.clone(),
            event: serde_json::to_value(event).unwrap_or_default(),
            error: error.chain(),
            attempts: i64::from(attempts),
            created_at: self.clock.now(),
            replayed_at: None,
        };
        // The event must not be dropped: keep trying to store it, and give up
        // only on stop (the event then stays unacknowledged) or on an error that
        // cannot heal.
        let mut backoff = self.retry.endless_backoff();
        loop {
            let stored = self.dead_letters.insert(&letter).await;
            let store_error = match stored {
                Ok(()) => break,
                Err(e) if e.is_transient() => e,
                Err(e) => {
                    return Err(ProcessorError::Store {
                        processor: self.name.to_string(),
                        operation: "store a dead letter",
                        source: e,
                    });
                }
            };
            let delay = backoff.next().unwrap_or(self.retry.max_delay);
            warn!(error = %store_error, ?delay, "storing a dead letter failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Outcome::Interrupted),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.metrics.dead_lettered.increment(1);
        ProcessorStats::add(&self.stats.0.dead_lettered);
        warn!(attempts, error = %error.chain(), dead_letter = %letter.id, "handler failed; event dead-lettered");
        debug!(dead_letter = %letter.id, "dead letter stored");
        Ok(Outcome::DeadLettered)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("handler panicked: {detail}")
}

//! The sequential processor: one event at a time, in feed order.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::checkpoint::tick;
use super::dispatch::Outcome;
use super::telemetry::ProcessorStats;
use super::{
    Core, EventHandler, ProcessorConfig, ProcessorError, ProcessorHandle, ProcessorPorts,
    ProcessorReport,
};

/// Watches a collection from its checkpoint and hands each change to a handler,
/// one at a time in feed order.
///
/// Each event is retried per [`ProcessorConfig::retry`]; when retries run out it
/// is dead-lettered and processing continues, or in
/// [`FailureMode::Stop`](super::FailureMode::Stop) the processor stops with the
/// checkpoint before it. The checkpoint follows
/// [`ProcessorConfig::checkpoint`] and is always written on a graceful stop.
pub struct EventProcessor {
    core: Core,
}

impl fmt::Debug for EventProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventProcessor")
            .field("config", &self.core.config)
            .finish_non_exhaustive()
    }
}

impl EventProcessor {
    /// A processor; metric handles are registered with the recorder installed now.
    pub fn new(config: ProcessorConfig, ports: ProcessorPorts, handler: impl EventHandler) -> Self {
        Self::with_shared_handler(config, ports, Arc::new(handler))
    }

    /// Like [`new`](Self::new) with a handler shared with other owners.
    pub fn with_shared_handler(
        config: ProcessorConfig,
        ports: ProcessorPorts,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        EventProcessor {
            core: Core::new(config, ports, handler),
        }
    }

    /// Live counters; clones share them.
    pub fn stats(&self) -> ProcessorStats {
        self.core.stats.clone()
    }

    /// Runs on a new task until stopped through the handle or by an error.
    pub fn spawn(self) -> ProcessorHandle {
        let name = Arc::clone(&self.core.name);
        let stats = self.core.stats.clone();
        ProcessorHandle::spawn(name, stats, |cancel| self.run(cancel))
    }

    /// Runs until `cancel` fires (then drains and writes the checkpoint and
    /// returns `Ok`) or until an error. Pass a
    /// [`LeaseKeeper`](crate::lease_keeper::LeaseKeeper)'s token to stop when a
    /// lease is lost.
    pub async fn run(self, cancel: CancellationToken) -> Result<ProcessorReport, ProcessorError> {
        let span = tracing::info_span!(
            "event_processor",
            processor = %self.core.name,
            collection = self.core.config.schema.name(),
        );
        self.run_inner(cancel).instrument(span).await
    }

    async fn run_inner(self, cancel: CancellationToken) -> Result<ProcessorReport, ProcessorError> {
        let core = &self.core;
        let (mut cursor, mut checkpointer) = core.open().await?;
        let mut ticker = checkpointer.ticker();
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tick(&mut ticker) => {
                    checkpointer.save_logged().await;
                    continue;
                }
                event = cursor.next() => event?,
            };
            match core.dispatcher.dispatch(&event, &cancel).await? {
                Outcome::Handled | Outcome::DeadLettered => {
                    ProcessorStats::add(&core.stats.0.acknowledged);
                    checkpointer.advance(event.token.clone(), 1);
                    checkpointer.save_if_due().await;
                }
                Outcome::Interrupted => break,
                Outcome::Failed { attempts, error } => {
                    checkpointer.flush().await?;
                    return Err(core.handler_failed(&event, attempts, error));
                }
            }
        }
        checkpointer.flush().await?;
        tracing::info!("processor stopped");
        Ok(core.report(&checkpointer))
    }
}

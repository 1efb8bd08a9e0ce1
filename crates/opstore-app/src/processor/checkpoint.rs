//! Writing a processor's checkpoint by count and by time.

use std::sync::Arc;

use opstore_domain::{CheckpointStore, ResumeToken};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, warn};

use super::ProcessorError;
use super::config::CheckpointPolicy;
use super::telemetry::ProcessorStats;

pub(crate) struct Checkpointer {
    name: Arc<str>,
    store: Arc<dyn CheckpointStore>,
    policy: CheckpointPolicy,
    stats: ProcessorStats,
    /// Everything up to and including this token is done.
    latest: Option<ResumeToken>,
    saved: Option<ResumeToken>,
    since_save: u64,
}

impl Checkpointer {
    pub fn new(
        name: Arc<str>,
        store: Arc<dyn CheckpointStore>,
        policy: CheckpointPolicy,
        stats: ProcessorStats,
        loaded: Option<ResumeToken>,
    ) -> Self {
        Checkpointer {
            name,
            store,
            policy,
            stats,
            latest: loaded.clone(),
            saved: loaded,
            since_save: 0,
        }
    }

    /// A ticker for the time-based policy, or `None` without one.
    pub fn ticker(&self) -> Option<Interval> {
        let period = self.policy.every.filter(|d| !d.is_zero())?;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(ticker)
    }

    /// Records that everything up to `token` is done, `events` more of them.
    pub fn advance(&mut self, token: ResumeToken, events: u64) {
        self.latest = Some(token);
        self.since_save = self.since_save.saturating_add(events);
    }

    /// Writes when the count policy says so. A failed write is logged and
    /// retried at the next opportunity: it only means more redelivery.
    pub async fn save_if_due(&mut self) {
        let due = self
            .policy
            .every_events
            .is_some_and(|n| self.since_save >= u64::from(n.get()));
        if due {
            self.save_logged().await;
        }
    }

    /// Writes if there is unsaved progress (the time policy's tick).
    pub async fn save_logged(&mut self) {
        if let Err(error) = self.flush().await {
            warn!(processor = %self.name, %error, "checkpoint write failed; will retry");
        }
    }

    /// Writes if there is unsaved progress and reports a failure.
    pub async fn flush(&mut self) -> Result<(), ProcessorError> {
        let Some(token) = self.latest.clone() else {
            return Ok(());
        };
        if self.saved.as_ref() == Some(&token) {
            self.since_save = 0;
            return Ok(());
        }
        self.store
            .save(&self.name, &token)
            .await
            .map_err(|source| ProcessorError::Store {
                processor: self.name.to_string(),
                operation: "save the checkpoint",
                source,
            })?;
        debug!(processor = %self.name, %token, "checkpoint saved");
        ProcessorStats::add(&self.stats.0.checkpoints);
        self.saved = Some(token);
        self.since_save = 0;
        Ok(())
    }

    /// The last token written.
    pub fn saved(&self) -> Option<&ResumeToken> {
        self.saved.as_ref()
    }
}

/// Ticks of an optional interval; never ready without one.
pub(crate) async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

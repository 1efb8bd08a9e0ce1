//! The quarantine processor: an [`EventProcessor`] over the run's health
//! events that quarantines nodes on fatal events, deduplicates error records
//! and queues one drain job per quarantine session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opstore_app::DataStore;
use opstore_app::processor::{
    EventProcessor, HandlerError, ProcessorConfig, ProcessorHandle, ProcessorPorts, RetryPolicy,
    StartFrom,
};
use opstore_domain::entities::control_plane::JobType;
use opstore_domain::entities::errors::{ErrorRecord, Priority};
use opstore_domain::entities::health::{HealthEventRecord, QuarantineStatus};
use opstore_domain::{
    ChangeEvent, ChangeOp, Entity, Filter, Query, Timestamp, from_document, json,
};

use super::config::{CREATED_AT, NODE, POISON_CHECK, QUARANTINE};
use super::state::{Pipeline, lock, store_err};
use crate::error::CliError;

/// Starts the quarantine processor over this run's events only; returns its
/// handle and name (dead letters are filed under the name).
pub(super) fn spawn(
    pipeline: &Arc<Pipeline>,
    store: &DataStore,
) -> Result<(ProcessorHandle, String), CliError> {
    let name = format!("{}-quarantine", pipeline.run);
    let mut config = ProcessorConfig::new(
        name.clone(),
        HealthEventRecord::schema(),
        StartFrom::Beginning,
    );
    config.filter = Some(Filter::eq("healthevent.agent", pipeline.run.as_str()));
    config.retry = RetryPolicy::exponential(3, Duration::from_millis(1), Duration::from_millis(8));
    let ports = ProcessorPorts::from_store(store.store().as_ref())
        .map_err(store_err("opening the processor ports"))?;
    let handler_pipeline = Arc::clone(pipeline);
    let handle = EventProcessor::new(config, ports, move |event: ChangeEvent| {
        let p = Arc::clone(&handler_pipeline);
        async move { p.handle(event).await }
    })
    .spawn();
    tracing::info!(processor = %name, "quarantine processor started");
    Ok((handle, name))
}

impl Pipeline {
    /// The handler: inserts only; status updates that the pipeline itself
    /// writes come back through the feed and are ignored.
    async fn handle(&self, event: ChangeEvent) -> Result<(), HandlerError> {
        if event.op != ChangeOp::Insert {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.handle_insert(event).await;
        lock(&self.latencies).push(started.elapsed());
        result
    }

    async fn handle_insert(&self, event: ChangeEvent) -> Result<(), HandlerError> {
        let doc = event
            .document
            .ok_or_else(|| HandlerError::permanent("insert without a document"))?;
        let record: HealthEventRecord = from_document(doc)
            .map_err(|e| HandlerError::permanent(format!("not a health event: {e}")))?;
        let attempt = {
            let mut attempts = lock(&self.attempts);
            let n = attempts.entry(record.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let ev = &record.event;
        if ev.check_name == POISON_CHECK {
            return Err(HandlerError::new(format!(
                "event `{}`: error codes {:?} do not parse",
                record.id, ev.error_codes
            )));
        }
        if attempt == 1 && ev.metadata.get("demo.transient").is_some_and(|v| v == "1") {
            return Err(HandlerError::new(
                "quarantine API timed out (simulated transient failure)",
            ));
        }
        if ev.is_fatal {
            self.quarantine(&record).await?;
        }
        lock(&self.processed).insert(record.id.clone());
        Ok(())
    }

    async fn quarantine(&self, record: &HealthEventRecord) -> Result<(), HandlerError> {
        let ev = &record.event;
        let node = ev.node_name.as_str();
        let fingerprint = self.fingerprint(node, &ev.check_name);
        let now = Timestamp::now();
        self.errors
            .save(ErrorRecord {
                id: String::new(),
                fingerprint: fingerprint.clone(),
                timestamp: now,
                namespace: "gpu-fleet".into(),
                pod: node.to_owned(),
                container: ev.component_class.clone(),
                message: ev.message.clone(),
                priority: Priority::P1,
                count: 1,
                first_seen: record.created_at,
                last_seen: record.created_at,
                rule_matched: ev.check_name.clone(),
                remediated: false,
                remediated_at: None,
                labels: BTreeMap::from([("run".to_owned(), self.run.clone())]),
            })
            .await?;
        self.error_occurrences.fetch_add(1, Ordering::Relaxed);
        lock(&self.fingerprints).insert(fingerprint.clone());
        // The node's session: its latest event that opened, closed or was
        // cancelled by an operator.
        let boundary = Query::filter(Filter::all_of([
            Filter::eq(NODE, node),
            Filter::ne("id", record.id.as_str()),
            Filter::is_in(
                QUARANTINE,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                    QuarantineStatus::UnQuarantined.as_str(),
                    QuarantineStatus::Cancelled.as_str(),
                ],
            ),
        ]))
        .sort_desc(CREATED_AT)
        .sort_desc("id")
        .limit(1);
        let latest = self.health.find(&boundary).await?.into_iter().next();
        match latest.and_then(|l| l.status.node_quarantined) {
            None | Some(QuarantineStatus::UnQuarantined) => {
                self.open_session(record, node, fingerprint).await?;
            }
            Some(QuarantineStatus::Quarantined | QuarantineStatus::AlreadyQuarantined) => {
                self.health
                    .update_quarantine_status(&record.id, QuarantineStatus::AlreadyQuarantined)
                    .await?;
            }
            Some(QuarantineStatus::Cancelled) => {
                // An operator took the node over; automation keeps its hands off.
                self.left_to_operator.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Quarantines the node and queues its drain job.
    async fn open_session(
        &self,
        record: &HealthEventRecord,
        node: &str,
        fingerprint: String,
    ) -> Result<(), HandlerError> {
        self.health
            .update_quarantine_status(&record.id, QuarantineStatus::Quarantined)
            .await?;
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        let cluster = self
            .clusters
            .get(node)
            .ok_or_else(|| HandlerError::permanent(format!("unknown node `{node}`")))?;
        let job = self
            .control
            .create_job(
                cluster,
                JobType::ScaleWorkers,
                Some(3),
                Some(json!({
                    "node": node,
                    "event": record.id,
                    "fingerprint": fingerprint,
                    "crash": session == self.crash_session,
                })),
            )
            .await?;
        tracing::debug!(job = %job.id, node, session, "drain job queued");
        lock(&self.jobs_created).insert(job.id);
        self.job_queued.notify_waiters();
        Ok(())
    }
}

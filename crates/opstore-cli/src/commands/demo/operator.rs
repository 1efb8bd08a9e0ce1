//! The operator: midway, with the pipeline idle, uncordons a node by hand by
//! cancelling its quarantine session, and keeps a snapshot of what was
//! cancelled so the invariants can prove automation left it alone.

use std::collections::BTreeMap;

use opstore_domain::entities::health::QuarantineStatus;
use opstore_domain::{Filter, Query, to_document};

use super::config::{NODE, QUARANTINE};
use super::state::{Pipeline, store_err};
use crate::error::CliError;

/// What the operator did.
#[derive(Debug, Default)]
pub(super) struct OperatorReport {
    /// Sessions cancelled (0 or 1).
    pub cancelled_sessions: u64,
    /// Events set to Cancelled.
    pub cancelled_events: u64,
    /// The cancelled events as they were right after the cancellation, by id.
    pub snapshot: BTreeMap<String, serde_json::Value>,
}

/// Cancels `node`'s latest quarantine session.
pub(super) async fn cancel_session(
    pipeline: &Pipeline,
    node: &str,
) -> Result<OperatorReport, CliError> {
    let mut report = OperatorReport::default();
    let n = pipeline
        .health
        .cancel_latest_quarantine(node)
        .await
        .map_err(store_err("cancelling a quarantine session"))?;
    if n > 0 {
        report.cancelled_sessions = 1;
        report.cancelled_events = n;
    }
    tracing::info!(
        node,
        events = n,
        "operator cancelled the quarantine session"
    );
    let cancelled = pipeline
        .health
        .find(&Query::filter(Filter::eq(NODE, node).and(Filter::eq(
            QUARANTINE,
            QuarantineStatus::Cancelled.as_str(),
        ))))
        .await
        .map_err(store_err("reading cancelled events"))?;
    for record in cancelled {
        let doc = to_document(&record).map_err(store_err("encoding an event"))?;
        report.snapshot.insert(record.id, doc);
    }
    Ok(report)
}

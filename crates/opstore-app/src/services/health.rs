//! Health events of a GPU fleet: creation with deduplication, lookups, status
//! changes, and cancellation of a node's quarantine session.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opstore_domain::entities::health::{
    HealthEvent, HealthEventRecord, HealthEventStatus, MaintenanceEvent, OperationState,
    OperationStatus, QuarantineStatus,
};
use opstore_domain::{
    Clock, Filter, Query, Repository, Result, Store, StoreError, SystemClock, Timestamp, TxExt,
    TxOptions, Update, UpdateCount, Value, run_transaction,
};

use super::{new_id, repository};

mod maintenance;

const NODE: &str = "healthevent.nodename";
const QUARANTINE: &str = "healtheventstatus.nodequarantined";
const EVICTION: &str = "healtheventstatus.userpodsevictionstatus";
const REMEDIATION: &str = "healtheventstatus.remediationstatus";
const IDEMPOTENCY_KEY: &str = "healthevent.idempotencykey";
const CREATED_AT: &str = "createdAt";

/// Result of [`HealthEventService::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored.
    Created(Box<HealthEventRecord>),
    /// An event with the same idempotency key is already stored; nothing was written.
    Duplicate {
        /// Key of the stored event.
        existing_id: String,
    },
}

/// One status change, applied to one event or to every event of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusChange {
    /// Quarantine state; `Quarantined` and `AlreadyQuarantined` also stamp the
    /// quarantine finish time.
    Quarantine(QuarantineStatus),
    /// User-pod eviction; `Succeeded` and `AlreadyDrained` also stamp the drain
    /// finish time.
    Eviction(OperationStatus),
    /// Remediation; `Succeeded` and `Failed` also record whether the fault was
    /// remediated and when remediation last ran.
    Remediation(OperationStatus),
}

impl StatusChange {
    /// The update that applies this change at `now`.
    pub fn to_update(&self, now: Timestamp) -> Update {
        match self {
            StatusChange::Quarantine(status) => {
                let update = Update::new().set(QUARANTINE, status.as_str());
                match status {
                    QuarantineStatus::Quarantined | QuarantineStatus::AlreadyQuarantined => {
                        update.set("healtheventstatus.quarantinefinishtimestamp", now)
                    }
                    _ => update,
                }
            }
            StatusChange::Eviction(op) => {
                let update = operation_update(EVICTION, op);
                match op.status {
                    OperationState::Succeeded | OperationState::AlreadyDrained => {
                        update.set("healtheventstatus.drainfinishtimestamp", now)
                    }
                    _ => update,
                }
            }
            StatusChange::Remediation(op) => {
                let update = operation_update(REMEDIATION, op);
                match op.status {
                    OperationState::Succeeded | OperationState::Failed => update
                        .set(
                            "healtheventstatus.faultremediated",
                            op.status == OperationState::Succeeded,
                        )
                        .set("healtheventstatus.lastremediationtimestamp", now),
                    _ => update,
                }
            }
        }
    }
}

fn operation_update(prefix: &str, op: &OperationStatus) -> Update {
    let update = Update::new().set(&format!("{prefix}.status"), op.status.as_str());
    match &op.message {
        Some(message) => update.set(&format!("{prefix}.message"), message.as_str()),
        None => update.unset(&format!("{prefix}.message")),
    }
}

/// Health and maintenance events.
pub struct HealthEventService {
    store: Arc<dyn Store>,
    events: Arc<dyn Repository<HealthEventRecord>>,
    maintenance: Arc<dyn Repository<MaintenanceEvent>>,
    clock: Arc<dyn Clock>,
    duplicates: AtomicU64,
}

impl std::fmt::Debug for HealthEventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthEventService")
            .field("backend", &self.store.backend())
            .field("duplicates", &self.duplicates_skipped())
            .finish_non_exhaustive()
    }
}

impl HealthEventService {
    /// The service over `store`, on the system clock.
    pub fn new(store: Arc<dyn Store>) -> Result<Self> {
        let events = repository::<HealthEventRecord>(store.as_ref())?;
        let maintenance = repository::<MaintenanceEvent>(store.as_ref())?;
        Ok(Self::from_parts(
            store,
            events,
            maintenance,
            Arc::new(SystemClock),
        ))
    }

    /// The service over explicit parts. `store` is used only for transactions.
    pub fn from_parts(
        store: Arc<dyn Store>,
        events: Arc<dyn Repository<HealthEventRecord>>,
        maintenance: Arc<dyn Repository<MaintenanceEvent>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        HealthEventService {
            store,
            events,
            maintenance,
            clock,
            duplicates: AtomicU64::new(0),
        }
    }

    /// Duplicate creations skipped by this service since it was built.
    pub fn duplicates_skipped(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Stores a new event with a fresh id, the current time and an empty status.
    pub async fn create(&self, event: HealthEvent) -> Result<CreateOutcome> {
        let record = HealthEventRecord {
            id: new_id(),
            created_at: self.clock.now(),
            event,
            status: HealthEventStatus::default(),
        };
        self.create_record(record).await
    }

    /// Stores `record` (an empty id is generated). An event whose idempotency key
    /// is already stored is not inserted again: it is counted and reported as a
    /// duplicate.
    pub async fn create_record(&self, mut record: HealthEventRecord) -> Result<CreateOutcome> {
        if record.id.is_empty() {
            record.id = new_id();
        }
        let key = record.event.idempotency_key.clone();
        if let Some(key) = &key {
            if let Some(existing) = self.by_idempotency_key(key).await? {
                return Ok(self.duplicate(existing));
            }
        }
        let err = match self.events.insert(&record).await {
            Ok(()) => return Ok(CreateOutcome::Created(Box::new(record))),
            Err(e) => e,
        };
        // A concurrent writer may have stored the same key between the check and
        // the insert; the unique index turned our insert into a conflict.
        if let (true, Some(key)) = (err.is_conflict(), &key) {
            if let Some(existing) = self.by_idempotency_key(key).await? {
                return Ok(self.duplicate(existing));
            }
        }
        Err(err)
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<HealthEventRecord>> {
        self.events
            .get_by_field(IDEMPOTENCY_KEY, Value::from(key))
            .await
    }

    fn duplicate(&self, existing: HealthEventRecord) -> CreateOutcome {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("opstore_health_events_duplicate_total").increment(1);
        tracing::debug!(id = %existing.id, "duplicate health event skipped");
        CreateOutcome::Duplicate {
            existing_id: existing.id,
        }
    }

    /// The event with this id.
    pub async fn get(&self, id: &str) -> Result<Option<HealthEventRecord>> {
        self.events.get(id).await
    }

    /// The node's most recently created event.
    pub async fn latest_for_node(&self, node: &str) -> Result<Option<HealthEventRecord>> {
        let query = Query::filter(Filter::eq(NODE, node))
            .sort_desc(CREATED_AT)
            .sort_desc("id")
            .limit(1);
        Ok(self.events.find(&query).await?.into_iter().next())
    }

    /// Every event of a node, oldest first.
    pub async fn find_by_node(&self, node: &str) -> Result<Vec<HealthEventRecord>> {
        self.find(&Query::filter(Filter::eq(NODE, node)).sort_asc(CREATED_AT))
            .await
    }

    /// Every event with this quarantine status, oldest first.
    pub async fn find_by_quarantine_status(
        &self,
        status: QuarantineStatus,
    ) -> Result<Vec<HealthEventRecord>> {
        let filter = Filter::eq(QUARANTINE, status.as_str());
        self.find(&Query::filter(filter).sort_asc(CREATED_AT)).await
    }

    /// Events matching an arbitrary query (paths checked against the schema).
    pub async fn find(&self, query: &Query) -> Result<Vec<HealthEventRecord>> {
        self.events.find(query).await
    }

    /// Walks every event matching `filter`, oldest first, handing `callback` batches
    /// of at most `batch_size`. Stops at the callback's first error and returns it;
    /// otherwise returns how many events were handed over. Paging is by position
    /// after the last event seen, so concurrent inserts never shift a batch.
    pub async fn find_in_batches<F, Fut, E>(
        &self,
        filter: &Filter,
        batch_size: u64,
        mut callback: F,
    ) -> std::result::Result<u64, E>
    where
        F: FnMut(Vec<HealthEventRecord>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: From<StoreError>,
    {
        let batch_size = batch_size.max(1);
        let mut after: Option<(Timestamp, String)> = None;
        let mut total = 0;
        loop {
            let page_filter = match &after {
                None => filter.clone(),
                Some((at, id)) => filter.clone().and(
                    Filter::gt(CREATED_AT, *at)
                        .or(Filter::eq(CREATED_AT, *at).and(Filter::gt("id", id.as_str()))),
                ),
            };
            let query = Query::filter(page_filter)
                .sort_asc(CREATED_AT)
                .sort_asc("id")
                .limit(batch_size);
            let batch = self.events.find(&query).await?;
            let Some(last) = batch.last() else {
                return Ok(total);
            };
            after = Some((last.created_at, last.id.clone()));
            let full = batch.len() as u64 == batch_size;
            total += batch.len() as u64;
            callback(batch).await?;
            if !full {
                return Ok(total);
            }
        }
    }

    /// Applies a status change to one event and returns it; `NotFound` when missing.
    pub async fn update_status(
        &self,
        id: &str,
        change: &StatusChange,
    ) -> Result<HealthEventRecord> {
        let update = change.to_update(self.clock.now());
        self.events.update_one(id, &update).await
    }

    /// Sets the quarantine status of one event.
    pub async fn update_quarantine_status(
        &self,
        id: &str,
        status: QuarantineStatus,
    ) -> Result<HealthEventRecord> {
        self.update_status(id, &StatusChange::Quarantine(status))
            .await
    }

    /// Sets the user-pod eviction status of one event.
    pub async fn update_eviction_status(
        &self,
        id: &str,
        status: OperationStatus,
    ) -> Result<HealthEventRecord> {
        self.update_status(id, &StatusChange::Eviction(status))
            .await
    }

    /// Sets the remediation status of one event.
    pub async fn update_remediation_status(
        &self,
        id: &str,
        status: OperationStatus,
    ) -> Result<HealthEventRecord> {
        self.update_status(id, &StatusChange::Remediation(status))
            .await
    }

    /// Applies a status change to every event of a node.
    pub async fn update_node_status(
        &self,
        node: &str,
        change: &StatusChange,
    ) -> Result<UpdateCount> {
        let update = change.to_update(self.clock.now());
        self.events
            .update_many(&Filter::eq(NODE, node), &update)
            .await
    }

    /// Whether any event of the node reports its user pods evicted.
    pub async fn is_node_drained(&self, node: &str) -> Result<bool> {
        let filter = Filter::eq(NODE, node).and(Filter::eq(
            "healtheventstatus.userpodsevictionstatus.status",
            OperationState::Succeeded.as_str(),
        ));
        self.events.exists(&filter).await
    }

    /// Cancels the node's current quarantine session after a manual intervention.
    ///
    /// The session starts at the node's latest event whose status is `Quarantined`
    /// or `UnQuarantined`. Only if that event is `Quarantined` (the node is still
    /// quarantined) does every event of the node created at or after it, whose
    /// status is `Quarantined` or `AlreadyQuarantined`, become `Cancelled`. Runs in
    /// one transaction and returns how many events changed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use opstore_app::services::health::{CreateOutcome, HealthEventService};
    /// use opstore_app::{DataStore, StoreConfig};
    /// use opstore_domain::entities::health::{HealthEvent, QuarantineStatus};
    ///
    /// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
    /// let health = HealthEventService::new(store.store().clone())?;
    /// let fault = HealthEvent { node_name: "gpu-7".into(), is_fatal: true, ..HealthEvent::default() };
    /// let CreateOutcome::Created(event) = health.create(fault).await? else { unreachable!() };
    /// health.update_quarantine_status(&event.id, QuarantineStatus::Quarantined).await?;
    ///
    /// // An operator uncordoned gpu-7 by hand: automation must not touch it any more.
    /// assert_eq!(health.cancel_latest_quarantine("gpu-7").await?, 1);
    /// let event = health.get(&event.id).await?.expect("stored");
    /// assert_eq!(event.status.node_quarantined, Some(QuarantineStatus::Cancelled));
    /// // Nothing is left to cancel.
    /// assert_eq!(health.cancel_latest_quarantine("gpu-7").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn cancel_latest_quarantine(&self, node: &str) -> Result<u64> {
        let node = node.to_owned();
        run_transaction(self.store.as_ref(), TxOptions::default(), move |tx| {
            let node = node.clone();
            async move {
                let events = tx.repository::<HealthEventRecord>()?;
                let boundary = Query::filter(Filter::eq(NODE, node.as_str()).and(Filter::is_in(
                    QUARANTINE,
                    [
                        QuarantineStatus::Quarantined.as_str(),
                        QuarantineStatus::UnQuarantined.as_str(),
                    ],
                )))
                .sort_desc(CREATED_AT)
                .sort_desc("id")
                .limit(1);
                let Some(latest) = events.find(&boundary).await?.into_iter().next() else {
                    return Ok(0);
                };
                if latest.status.node_quarantined != Some(QuarantineStatus::Quarantined) {
                    return Ok(0);
                }
                let session = Filter::all_of([
                    Filter::eq(NODE, node.as_str()),
                    Filter::gte(CREATED_AT, latest.created_at),
                    Filter::is_in(
                        QUARANTINE,
                        [
                            QuarantineStatus::Quarantined.as_str(),
                            QuarantineStatus::AlreadyQuarantined.as_str(),
                        ],
                    ),
                ]);
                let update = Update::new().set(QUARANTINE, QuarantineStatus::Cancelled.as_str());
                Ok(events.update_many(&session, &update).await?.modified)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests;

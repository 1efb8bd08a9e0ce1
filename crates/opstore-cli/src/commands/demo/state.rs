//! What the handler, the workers and the waits share: the services and the
//! run's own bookkeeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opstore_app::DataStore;
use opstore_app::services::control_plane::ControlPlaneService;
use opstore_app::services::errors::{ErrorService, ErrorServiceConfig};
use opstore_app::services::health::HealthEventService;
use opstore_domain::entities::control_plane::ClusterJob;
use opstore_domain::entities::health::HealthEventRecord;
use opstore_domain::{CollectionRepository, Lease, StoreError};
use tokio::sync::Notify;

use super::config::Timing;
use crate::error::CliError;

pub(super) fn store_err(context: &str) -> impl Fn(StoreError) -> CliError + '_ {
    move |e| CliError::store(context, e)
}

/// Locks `m`; a panicked holder cannot leave these plain collections half-written.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The services of one run and everything it counts.
#[derive(Debug)]
pub(super) struct Pipeline {
    pub run: String,
    pub timing: Timing,
    pub health: HealthEventService,
    pub health_events: CollectionRepository<HealthEventRecord>,
    pub jobs: CollectionRepository<ClusterJob>,
    pub errors: ErrorService,
    pub control: ControlPlaneService,
    pub store: DataStore,
    /// Cluster id of each node, by node name.
    pub clusters: HashMap<String, String>,
    pub crash_session: u64,
    pub attempts: Mutex<HashMap<String, u32>>,
    pub processed: Mutex<BTreeSet<String>>,
    pub latencies: Mutex<Vec<Duration>>,
    pub sessions: AtomicU64,
    pub left_to_operator: AtomicU64,
    pub fingerprints: Mutex<BTreeSet<String>>,
    pub error_occurrences: AtomicU64,
    /// Drain jobs this run queued.
    pub jobs_created: Mutex<BTreeSet<String>>,
    /// Drain jobs a worker finished.
    pub jobs_finished: Mutex<BTreeSet<String>>,
    /// Drain jobs recovery failed for good (attempts exhausted).
    pub jobs_failed: Mutex<BTreeMap<String, String>>,
    pub executions: Mutex<BTreeMap<String, u32>>,
    pub jobs_done: AtomicU64,
    pub crashed: Mutex<Vec<(String, Lease)>>,
    pub takeovers: AtomicU64,
    pub fenced: AtomicU64,
    /// Drain jobs started again after recovery (whichever reaper recovered them).
    pub recovered: Mutex<BTreeSet<String>>,
    pub remediation_logs: AtomicU64,
    /// Wakes idle workers when a job is queued or recovered.
    pub job_queued: Notify,
}

impl Pipeline {
    pub(super) fn open(
        store: &DataStore,
        run: String,
        timing: Timing,
        clusters: HashMap<String, String>,
        crash_session: u64,
    ) -> Result<Pipeline, CliError> {
        let shared = store.store().clone();
        Ok(Pipeline {
            run,
            timing,
            health: HealthEventService::new(shared.clone())
                .map_err(store_err("opening health events"))?,
            health_events: store
                .repository::<HealthEventRecord>()
                .map_err(store_err("opening health events"))?,
            jobs: store
                .repository::<ClusterJob>()
                .map_err(store_err("opening cluster jobs"))?,
            errors: ErrorService::new(shared.as_ref(), ErrorServiceConfig { max_errors: None })
                .map_err(store_err("opening error records"))?,
            control: ControlPlaneService::new(shared)
                .map_err(store_err("opening the control plane"))?,
            store: store.clone(),
            clusters,
            crash_session,
            attempts: Mutex::default(),
            processed: Mutex::default(),
            latencies: Mutex::default(),
            sessions: AtomicU64::new(0),
            left_to_operator: AtomicU64::new(0),
            fingerprints: Mutex::default(),
            error_occurrences: AtomicU64::new(0),
            jobs_created: Mutex::default(),
            jobs_finished: Mutex::default(),
            jobs_failed: Mutex::default(),
            executions: Mutex::default(),
            jobs_done: AtomicU64::new(0),
            crashed: Mutex::default(),
            takeovers: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            recovered: Mutex::default(),
            remediation_logs: AtomicU64::new(0),
            job_queued: Notify::new(),
        })
    }

    pub(super) fn processed_count(&self) -> u64 {
        lock(&self.processed).len() as u64
    }

    pub(super) fn fingerprint(&self, node: &str, check: &str) -> String {
        format!("{}/{node}/{check}", self.run)
    }

    /// This run's drain jobs that neither finished nor failed for good.
    pub(super) fn outstanding_jobs(&self) -> Vec<String> {
        let created = lock(&self.jobs_created);
        let finished = lock(&self.jobs_finished);
        let failed = lock(&self.jobs_failed);
        created
            .iter()
            .filter(|id| !finished.contains(*id) && !failed.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Whether a crashed worker's job still waits for recovery, which takes
    /// up to `stuck_after` without any visible progress.
    pub(super) fn awaiting_recovery(&self) -> bool {
        let recovered = lock(&self.recovered);
        let failed = lock(&self.jobs_failed);
        lock(&self.crashed)
            .iter()
            .any(|(id, _)| !recovered.contains(id) && !failed.contains_key(id))
    }

    /// A number that grows whenever any part of the pipeline moves; the waits
    /// measure stalls by it.
    pub(super) fn progress_marker(&self) -> u64 {
        let counters = [
            &self.jobs_done,
            &self.takeovers,
            &self.remediation_logs,
            &self.error_occurrences,
        ];
        let sets = self.processed_count()
            + lock(&self.jobs_created).len() as u64
            + lock(&self.jobs_failed).len() as u64
            + lock(&self.recovered).len() as u64
            + lock(&self.attempts)
                .values()
                .map(|&n| u64::from(n))
                .sum::<u64>()
            + lock(&self.executions)
                .values()
                .map(|&n| u64::from(n))
                .sum::<u64>();
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            + sets
    }
}

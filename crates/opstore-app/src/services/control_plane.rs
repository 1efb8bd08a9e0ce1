//! The cluster-provisioning control plane: clusters, their jobs, job locks and the
//! worker's start-a-job pattern (and [`ControlPlaneService::run_job`], the whole
//! worker pattern in one call), plus audit, usage, outputs, RBAC and idempotency
//! (in `records`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opstore_domain::entities::control_plane::{
    AuditEvent, Cluster, ClusterJob, ClusterOutputs, ClusterStatus, DEFAULT_MAX_ATTEMPTS, JobLock,
    JobStatus, JobType, RbacMapping, UsageSample,
};
use opstore_domain::{
    Clock, Filter, IdempotencyStore, Lease, LockManager, Page, Query, Repository, Result, Store,
    StoreError, SystemClock, Timestamp, Update, Value,
};
use tokio_util::sync::CancellationToken;

use super::{new_prefixed_id, not_found, repository};

mod jobs;
mod locks;
mod records;
mod run;
mod worker;

pub use jobs::{Recovery, RecoveryAction};
pub use records::Idempotent;
pub use run::{JobContext, JobFailure, JobRun, JobRunConfig};
pub use worker::{JobLeaseHook, StartedJob, transition};

/// Every port and repository the control plane uses; build one by hand to inject
/// mocks, or use [`ControlPlaneService::new`].
#[derive(Clone)]
pub struct ControlPlaneParts {
    /// Used for transactions.
    pub store: Arc<dyn Store>,
    /// Clusters.
    pub clusters: Arc<dyn Repository<Cluster>>,
    /// Cluster jobs.
    pub jobs: Arc<dyn Repository<ClusterJob>>,
    /// Job-lock holder records.
    pub job_locks: Arc<dyn Repository<JobLock>>,
    /// Audit trail.
    pub audit: Arc<dyn Repository<AuditEvent>>,
    /// Usage samples.
    pub usage: Arc<dyn Repository<UsageSample>>,
    /// Cluster outputs.
    pub outputs: Arc<dyn Repository<ClusterOutputs>>,
    /// RBAC mappings.
    pub rbac: Arc<dyn Repository<RbacMapping>>,
    /// Leases behind job locks.
    pub locks: Arc<dyn LockManager>,
    /// Idempotency keys of API requests.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Time source for timestamps and retry-after checks.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for ControlPlaneParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneParts")
            .field("store", &self.store)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneParts {
    /// Every part from `store`, on the system clock.
    pub fn from_store(store: Arc<dyn Store>) -> Result<Self> {
        let s = store.as_ref();
        Ok(ControlPlaneParts {
            clusters: repository(s)?,
            jobs: repository(s)?,
            job_locks: repository(s)?,
            audit: repository(s)?,
            usage: repository(s)?,
            outputs: repository(s)?,
            rbac: repository(s)?,
            locks: s.locks(),
            idempotency: s.idempotency(),
            clock: Arc::new(SystemClock),
            store,
        })
    }
}

/// Which clusters to list. Unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFilter {
    /// Team.
    pub team: Option<String>,
    /// Owner.
    pub owner: Option<String>,
    /// Status.
    pub status: Option<ClusterStatus>,
    /// Platform.
    pub platform: Option<String>,
}

/// Which waiting jobs to look at: the scope of
/// [`ControlPlaneService::pending_jobs`] and
/// [`ControlPlaneService::count_pending_jobs`]. Unset fields match everything, so
/// a worker that takes any job says so with `JobScope::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobScope {
    /// Only jobs of this cluster.
    pub cluster_id: Option<String>,
    /// Only jobs of these types; empty matches every type.
    pub job_types: Vec<JobType>,
}

impl JobScope {
    /// The jobs of one cluster.
    pub fn cluster(cluster_id: impl Into<String>) -> Self {
        JobScope {
            cluster_id: Some(cluster_id.into()),
            job_types: Vec::new(),
        }
    }

    /// Narrows the scope to jobs of `job_types`.
    pub fn of_types(mut self, job_types: impl IntoIterator<Item = JobType>) -> Self {
        self.job_types = job_types.into_iter().collect();
        self
    }

    /// Waiting jobs (PENDING or RETRYING) in this scope.
    fn waiting(&self) -> Filter {
        let mut terms = vec![Filter::is_in(
            "status",
            [JobStatus::Pending, JobStatus::Retrying],
        )];
        if let Some(cluster_id) = &self.cluster_id {
            terms.push(Filter::eq("cluster_id", cluster_id.as_str()));
        }
        if !self.job_types.is_empty() {
            terms.push(Filter::is_in("job_type", self.job_types.iter().copied()));
        }
        Filter::all_of(terms)
    }
}

/// The control plane's store operations.
pub struct ControlPlaneService {
    p: ControlPlaneParts,
    lease_hook: Option<Arc<dyn JobLeaseHook>>,
}

impl fmt::Debug for ControlPlaneService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneService")
            .field("backend", &self.p.store.backend())
            .field("lease_hook", &self.lease_hook.is_some())
            .finish_non_exhaustive()
    }
}

/// The status update of a cluster moving to `status` at `now`, keeping the
/// one-active-cluster key in step (set while active, removed otherwise).
pub(crate) fn cluster_status_update(
    cluster: &Cluster,
    status: ClusterStatus,
    now: Timestamp,
) -> Update {
    let update = Update::new().set("status", status).set("updated_at", now);
    let update = if status.is_active() {
        update.set(
            "active_key",
            Cluster::active_key_for(&cluster.name, &cluster.platform, &cluster.base_domain),
        )
    } else {
        update.unset("active_key")
    };
    if status == ClusterStatus::Destroyed {
        update.set("destroyed_at", now)
    } else {
        update
    }
}

impl ControlPlaneService {
    /// The service over every part of `store`, on the system clock.
    pub fn new(store: Arc<dyn Store>) -> Result<Self> {
        Ok(Self::from_parts(ControlPlaneParts::from_store(store)?))
    }

    /// The service over explicit parts.
    pub fn from_parts(parts: ControlPlaneParts) -> Self {
        ControlPlaneService {
            p: parts,
            lease_hook: None,
        }
    }

    /// Installs what keeps a started job's lock alive, see [`JobLeaseHook`].
    pub fn with_lease_hook(mut self, hook: Arc<dyn JobLeaseHook>) -> Self {
        self.lease_hook = Some(hook);
        self
    }

    fn now(&self) -> Timestamp {
        self.p.clock.now()
    }

    /// Stores a new cluster (an empty id becomes `clu_…`; timestamps are set).
    /// `Conflict` when an active cluster (not DESTROYED or FAILED) already has the
    /// same name, platform and base domain.
    pub async fn create_cluster(&self, mut cluster: Cluster) -> Result<Cluster> {
        if cluster.id.is_empty() {
            cluster.id = new_prefixed_id("clu");
        }
        let now = self.now();
        cluster.created_at = now;
        cluster.updated_at = now;
        let key = Cluster::active_key_for(&cluster.name, &cluster.platform, &cluster.base_domain);
        let conflict = || {
            StoreError::Conflict(format!(
                "create cluster `{}`: an active cluster named `{}` exists on platform `{}` with base domain `{}`",
                cluster.id, cluster.name, cluster.platform, cluster.base_domain
            ))
        };
        cluster.active_key = cluster.status.is_active().then(|| key.clone());
        // Checked first for a clear message; the unique index on `active_key`
        // decides races.
        if cluster.status.is_active()
            && self
                .p
                .clusters
                .exists(&Filter::eq("active_key", key.as_str()))
                .await?
        {
            return Err(conflict());
        }
        match self.p.clusters.insert(&cluster).await {
            Err(e) if e.is_conflict() && cluster.status.is_active() => {
                if self
                    .p
                    .clusters
                    .exists(&Filter::eq("active_key", key.as_str()))
                    .await?
                {
                    Err(conflict())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
            Ok(()) => Ok(cluster),
        }
    }

    /// The cluster with this id.
    pub async fn get_cluster(&self, id: &str) -> Result<Option<Cluster>> {
        self.p.clusters.get(id).await
    }

    /// Matching clusters, newest first, with the total.
    pub async fn list_clusters(
        &self,
        filter: &ClusterFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Cluster>> {
        let mut terms = Vec::new();
        let mut eq = |path: &str, v: Option<Value>| {
            if let Some(v) = v {
                terms.push(Filter::eq(path, v));
            }
        };
        eq("team", filter.team.clone().map(Value::from));
        eq("owner", filter.owner.clone().map(Value::from));
        eq("status", filter.status.map(Value::from));
        eq("platform", filter.platform.clone().map(Value::from));
        let query = Query::filter(Filter::all_of(terms))
            .sort_desc("created_at")
            .skip(offset)
            .limit(limit);
        self.p.clusters.find_page(&query).await
    }

    /// Moves a cluster to `status`; `NotFound` for an unknown id, `Conflict` when
    /// reactivating would duplicate an active cluster.
    pub async fn update_cluster_status(&self, id: &str, status: ClusterStatus) -> Result<Cluster> {
        let cluster = self
            .p
            .clusters
            .get(id)
            .await?
            .ok_or_else(|| not_found::<Cluster>("update cluster status", id))?;
        let update = cluster_status_update(&cluster, status, self.now());
        self.p.clusters.update_one(id, &update).await
    }

    /// Sets or clears when the janitor destroys a cluster; `NotFound` for an unknown id.
    pub async fn set_destroy_at(&self, id: &str, at: Option<Timestamp>) -> Result<Cluster> {
        let update = match at {
            Some(at) => Update::new().set("destroy_at", at),
            None => Update::new().unset("destroy_at"),
        };
        self.p
            .clusters
            .update_one(id, &update.set("updated_at", self.now()))
            .await
    }

    /// READY clusters whose destroy time has come, soonest first.
    pub async fn clusters_due_for_destroy(&self) -> Result<Vec<Cluster>> {
        let filter =
            Filter::eq("status", ClusterStatus::Ready).and(Filter::lte("destroy_at", self.now()));
        self.p
            .clusters
            .find(&Query::filter(filter).sort_asc("destroy_at"))
            .await
    }

    /// Queues a job for an existing cluster (`NotFound` otherwise) with attempt 1
    /// and `max_attempts` (default 3).
    pub async fn create_job(
        &self,
        cluster_id: &str,
        job_type: JobType,
        max_attempts: Option<i64>,
        metadata: Option<Value>,
    ) -> Result<ClusterJob> {
        if self.p.clusters.get(cluster_id).await?.is_none() {
            return Err(not_found::<Cluster>("create job", cluster_id));
        }
        let now = self.now();
        let job = ClusterJob {
            id: new_prefixed_id("job"),
            cluster_id: cluster_id.to_owned(),
            job_type,
            status: JobStatus::Pending,
            attempt: 1,
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            error_code: None,
            error_message: None,
            started_at: None,
            ended_at: None,
            retry_after: None,
            created_at: now,
            updated_at: now,
            metadata,
        };
        self.p.jobs.insert(&job).await?;
        Ok(job)
    }

    /// The job with this id.
    pub async fn get_job(&self, id: &str) -> Result<Option<ClusterJob>> {
        self.p.jobs.get(id).await
    }

    /// Jobs of a cluster, newest first.
    pub async fn jobs_for_cluster(&self, cluster_id: &str) -> Result<Vec<ClusterJob>> {
        let query = Query::filter(Filter::eq("cluster_id", cluster_id)).sort_desc("created_at");
        self.p.jobs.find(&query).await
    }

    /// Up to `limit` jobs in `scope` waiting for a worker (PENDING or RETRYING),
    /// oldest first, skipping those whose retry-after is still in the future.
    pub async fn pending_jobs(&self, scope: &JobScope, limit: u64) -> Result<Vec<ClusterJob>> {
        let filter = scope
            .waiting()
            .and(Filter::missing("retry_after").or(Filter::lte("retry_after", self.now())));
        self.p
            .jobs
            .find(&Query::filter(filter).sort_asc("created_at").limit(limit))
            .await
    }

    /// Number of jobs in `scope` waiting for a worker, due or not.
    pub async fn count_pending_jobs(&self, scope: &JobScope) -> Result<u64> {
        self.p.jobs.count(&scope.waiting()).await
    }

    /// Lease name of a cluster's job lock.
    pub fn job_lock_name(cluster_id: &str) -> String {
        format!("cluster-job/{cluster_id}")
    }

    /// How long a job may run before [`recover_stuck_jobs`](Self::recover_stuck_jobs)
    /// considers it stuck, when callers have no better figure.
    pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(2 * 3600);

    fn token_filter(lease: &Lease) -> Filter {
        Filter::eq(
            "fencing_token",
            i64::try_from(lease.token()).unwrap_or(i64::MAX),
        )
    }

    fn hook_token(&self, lease: &Lease, ttl: Duration) -> Option<CancellationToken> {
        self.lease_hook
            .as_ref()
            .map(|h| h.keep_alive(lease.clone(), ttl))
    }
}

#[cfg(test)]
mod tests;

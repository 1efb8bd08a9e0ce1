//! The worker's start-a-job pattern as one call.

use std::fmt;
use std::time::Duration;

use opstore_domain::entities::control_plane::{
    Cluster, ClusterJob, ClusterStatus, JobLock, JobStatus, JobType,
};
use opstore_domain::{
    Lease, Repository, Result, StoreError, TxExt, TxOptions, Update, run_transaction,
};
use tokio_util::sync::CancellationToken;

use super::ControlPlaneService;
use super::locks::lock_record;
use crate::services::not_found;

/// The cluster status a job moves its cluster to, or `None` when the job may not
/// start from `current`. Jobs that leave the status alone return `current`.
pub fn transition(current: ClusterStatus, job: JobType) -> Option<ClusterStatus> {
    use ClusterStatus as S;
    match (job, current) {
        (JobType::Create, S::Pending | S::Creating) => Some(S::Creating),
        (
            JobType::Destroy | JobType::JanitorDestroy,
            S::Creating | S::Ready | S::Destroying | S::Failed | S::DestroyFailed,
        ) => Some(S::Destroying),
        (JobType::ScaleWorkers, S::Ready) => Some(S::Ready),
        (JobType::OrphanSweep, s) => Some(s),
        _ => None,
    }
}

/// Keeps a started job's lock alive while its work runs.
///
/// This is the hook for the lease keeper of the processors part of this crate: it
/// renews the lease at a fraction of its TTL and cancels the returned token when
/// the lease is lost, so the job's work stops. Until one is installed with
/// [`ControlPlaneService::with_lease_hook`], [`StartedJob::lease_lost`] is `None`
/// and the caller renews the lease itself
/// ([`ControlPlaneService::renew_job_lock`]).
pub trait JobLeaseHook: Send + Sync + fmt::Debug {
    /// Starts keeping `lease` alive with renewals of `ttl`; the token fires on loss.
    fn keep_alive(&self, lease: Lease, ttl: Duration) -> CancellationToken;
}

/// A job a worker started: the state after commit and the lock it holds.
#[derive(Debug, Clone)]
pub struct StartedJob {
    /// The job, RUNNING.
    pub job: ClusterJob,
    /// The cluster, in its new status.
    pub cluster: Cluster,
    /// The cluster's job lock; release it with
    /// [`ControlPlaneService::release_job_lock`] when the work ends.
    pub lease: Lease,
    /// Fires when the lease is lost, if a [`JobLeaseHook`] is installed.
    pub lease_lost: Option<CancellationToken>,
}

impl ControlPlaneService {
    /// Starts a pending job for `worker`, the way every worker must:
    ///
    /// 1. take the cluster's job lock (`LockHeld` when another live holder has it;
    ///    an expired lock is taken over);
    /// 2. in one transaction: lock the cluster row, re-read the job (`Conflict`
    ///    unless it is PENDING or RETRYING), validate the cluster's transition for
    ///    the job type (`Conflict` when invalid), check the lease still fences our
    ///    writes, mark the job RUNNING, move the cluster status, record the lock
    ///    holder, commit;
    /// 3. hand the lease to the [`JobLeaseHook`], if installed.
    ///
    /// The lease is taken before the transaction because the lock port is not
    /// transactional; if the transaction fails the lease is released.
    pub async fn start_job(
        &self,
        job_id: &str,
        worker: &str,
        lock_ttl: Duration,
    ) -> Result<StartedJob> {
        let mut started = self.start_job_unhooked(job_id, worker, lock_ttl).await?;
        started.lease_lost = self.hook_token(&started.lease, lock_ttl);
        Ok(started)
    }

    /// [`start_job`](Self::start_job) without handing the lease to the hook, for
    /// callers that keep the lease alive themselves.
    pub(super) async fn start_job_unhooked(
        &self,
        job_id: &str,
        worker: &str,
        lock_ttl: Duration,
    ) -> Result<StartedJob> {
        let job = self
            .p
            .jobs
            .get(job_id)
            .await?
            .ok_or_else(|| not_found::<ClusterJob>("start job", job_id))?;
        let name = Self::job_lock_name(&job.cluster_id);
        let Some(lease) = self.p.locks.try_acquire(&name, worker, lock_ttl).await? else {
            return Err(StoreError::LockHeld(format!(
                "start job `{job_id}`: job lock `{name}` is held by another worker"
            )));
        };
        let (job_id, cluster_id, tx_lease, now) = (
            job.id.clone(),
            job.cluster_id.clone(),
            lease.clone(),
            self.now(),
        );
        let started = run_transaction(self.p.store.as_ref(), TxOptions::default(), move |tx| {
            let (job_id, cluster_id, lease) = (job_id.clone(), cluster_id.clone(), tx_lease.clone());
            async move {
                let clusters = tx.repository::<Cluster>()?;
                let jobs = tx.repository::<ClusterJob>()?;
                let cluster = clusters
                    .get_for_update(&cluster_id)
                    .await?
                    .ok_or_else(|| not_found::<Cluster>("start job", &cluster_id))?;
                let job = jobs.get_for_update(&job_id).await?.ok_or_else(|| not_found::<ClusterJob>("start job", &job_id))?;
                if !matches!(job.status, JobStatus::Pending | JobStatus::Retrying) {
                    return Err(StoreError::Conflict(format!(
                        "start job `{job_id}` in `cluster_jobs`: status is {}, not PENDING or RETRYING",
                        job.status.as_str()
                    )));
                }
                let Some(next) = transition(cluster.status, job.job_type) else {
                    return Err(StoreError::Conflict(format!(
                        "start job `{job_id}`: a {} job cannot start on cluster `{cluster_id}` in status {}",
                        job.job_type.as_str(),
                        cluster.status.as_str()
                    )));
                };
                tx.check_fence(&lease).await?;
                let started = Update::new()
                    .set("status", JobStatus::Running)
                    .set("started_at", now)
                    .unset("ended_at")
                    .set("updated_at", now);
                let job = jobs.update_one(&job_id, &started).await?;
                let cluster = if next == cluster.status {
                    cluster
                } else {
                    clusters.update_one(&cluster_id, &super::cluster_status_update(&cluster, next, now)).await?
                };
                tx.repository::<JobLock>()?.upsert(&cluster_id, &lock_record(&job_id, &lease, now)).await?;
                Ok((job, cluster))
            }
        })
        .await;
        match started {
            Ok((job, cluster)) => Ok(StartedJob {
                job,
                cluster,
                lease,
                lease_lost: None,
            }),
            Err(e) => {
                if let Err(release) = self.p.locks.release(&lease).await {
                    tracing::warn!(lock = %lease.name(), error = %release, "releasing job lock after a failed start");
                }
                Err(e)
            }
        }
    }
}

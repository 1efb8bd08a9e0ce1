//! Job locks: one lease per cluster, so two workers never run jobs on the same
//! cluster at once. A lock whose TTL passed without renewal can be taken over.

use std::time::Duration;

use opstore_domain::entities::control_plane::JobLock;
use opstore_domain::{Filter, Lease, Result, Timestamp, Update};

use super::ControlPlaneService;

/// The live job lock of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLockInfo {
    /// The lease.
    pub lease: Lease,
    /// The job holding it, when its record matches the lease.
    pub job_id: Option<String>,
}

/// The update that records `lease` as held by `job_id` since `now`.
pub(crate) fn lock_record(job_id: &str, lease: &Lease, now: Timestamp) -> Update {
    Update::new()
        .set("job_id", job_id)
        .set("locked_by", lease.owner())
        .set("locked_at", now)
        .set(
            "fencing_token",
            i64::try_from(lease.token()).unwrap_or(i64::MAX),
        )
}

impl ControlPlaneService {
    /// Takes the cluster's job lock for `job_id` on behalf of `worker`, taking over
    /// an expired one. `None` while another holder's lock is live.
    pub async fn acquire_job_lock(
        &self,
        cluster_id: &str,
        job_id: &str,
        worker: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let name = Self::job_lock_name(cluster_id);
        let Some(lease) = self.p.locks.try_acquire(&name, worker, ttl).await? else {
            return Ok(None);
        };
        let record = lock_record(job_id, &lease, self.now());
        if let Err(e) = self.p.job_locks.upsert(cluster_id, &record).await {
            // Without its record the lock would be invisible to operators: give it up.
            let _ = self.p.locks.release(&lease).await;
            return Err(e);
        }
        Ok(Some(lease))
    }

    /// Extends a held job lock; `LockLost` when it expired and was taken over.
    pub async fn renew_job_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.p.locks.renew(lease, ttl).await
    }

    /// Releases a held job lock and its record; `LockLost` when it is no longer ours
    /// (the new holder's record stays).
    pub async fn release_job_lock(&self, lease: &Lease) -> Result<()> {
        self.p.locks.release(lease).await?;
        let cluster_id = lease
            .name()
            .strip_prefix("cluster-job/")
            .unwrap_or(lease.name());
        let filter = Filter::eq("cluster_id", cluster_id).and(Self::token_filter(lease));
        self.p.job_locks.delete_many(&filter).await?;
        Ok(())
    }

    /// The cluster's live job lock, if any.
    pub async fn job_lock(&self, cluster_id: &str) -> Result<Option<JobLockInfo>> {
        let Some(lease) = self
            .p
            .locks
            .current(&Self::job_lock_name(cluster_id))
            .await?
        else {
            return Ok(None);
        };
        let record: Option<JobLock> = self.p.job_locks.get(cluster_id).await?;
        let job_id = record
            .filter(|r| i64::try_from(lease.token()).ok() == Some(r.fencing_token))
            .map(|r| r.job_id);
        Ok(Some(JobLockInfo { lease, job_id }))
    }
}

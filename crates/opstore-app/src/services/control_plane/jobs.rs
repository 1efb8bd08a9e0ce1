//! Job state changes and the recovery of jobs whose worker vanished.

use std::time::Duration;

use opstore_domain::entities::control_plane::{
    Cluster, ClusterJob, ClusterStatus, JobStatus, JobType,
};
use opstore_domain::{
    Filter, Query, Repository, Result, TxExt, TxOptions, Update, Value, run_transaction,
};

use super::{ControlPlaneService, cluster_status_update};
use crate::services::not_found;

/// What recovery did with one stuck job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Attempts were left: the job waits for a worker again (RETRYING, attempt + 1).
    Retried,
    /// Attempts were exhausted: the job FAILED, and a CREATE's cluster became FAILED,
    /// a DESTROY's DESTROY_FAILED.
    Failed,
}

/// One recovered job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The job.
    pub job_id: String,
    /// Its cluster.
    pub cluster_id: String,
    /// What was done.
    pub action: RecoveryAction,
}

/// Error code recorded on a job recovered after its worker vanished.
pub const STUCK_ERROR_CODE: &str = "JOB_STUCK";

/// The status a cluster moves to when a job of `job_type` fails for good: a
/// CREATE's cluster FAILED, a DESTROY's (or janitor destroy's) DESTROY_FAILED.
pub(super) fn exhausted_cluster_status(job_type: JobType) -> Option<ClusterStatus> {
    match job_type {
        JobType::Create => Some(ClusterStatus::Failed),
        JobType::Destroy | JobType::JanitorDestroy => Some(ClusterStatus::DestroyFailed),
        JobType::ScaleWorkers | JobType::OrphanSweep => None,
    }
}

impl ControlPlaneService {
    async fn update_job(&self, id: &str, update: Update) -> Result<ClusterJob> {
        self.p
            .jobs
            .update_one(id, &update.set("updated_at", self.now()))
            .await
    }

    /// RUNNING from now; `NotFound` for an unknown id.
    pub async fn mark_job_started(&self, id: &str) -> Result<ClusterJob> {
        let update = Update::new()
            .set("status", JobStatus::Running)
            .set("started_at", self.now())
            .unset("ended_at");
        self.update_job(id, update).await
    }

    /// SUCCEEDED, ended now, with `metadata` when given; `NotFound` for an unknown id.
    pub async fn mark_job_succeeded(
        &self,
        id: &str,
        metadata: Option<Value>,
    ) -> Result<ClusterJob> {
        let mut update = Update::new()
            .set("status", JobStatus::Succeeded)
            .set("ended_at", self.now());
        if let Some(metadata) = metadata {
            update = update.set("metadata", metadata);
        }
        self.update_job(id, update).await
    }

    /// Back to PENDING after a failed attempt: keeps the attempt number, records
    /// the error, clears start and end, and is not picked up before `retry_after`.
    pub async fn mark_job_failed_for_retry(
        &self,
        id: &str,
        code: &str,
        message: &str,
        retry_after: Option<opstore_domain::Timestamp>,
    ) -> Result<ClusterJob> {
        let update = Update::new()
            .set("status", JobStatus::Pending)
            .set("error_code", code)
            .set("error_message", message)
            .unset("started_at")
            .unset("ended_at");
        let update = match retry_after {
            Some(at) => update.set("retry_after", at),
            None => update.unset("retry_after"),
        };
        self.update_job(id, update).await
    }

    /// FAILED for good, ended now, with the error; `NotFound` for an unknown id.
    pub async fn mark_job_failed(&self, id: &str, code: &str, message: &str) -> Result<ClusterJob> {
        let update = Update::new()
            .set("status", JobStatus::Failed)
            .set("error_code", code)
            .set("error_message", message)
            .set("ended_at", self.now());
        self.update_job(id, update).await
    }

    /// Counts another attempt and marks the job RETRYING; `NotFound` for an unknown id.
    pub async fn increment_attempt(&self, id: &str) -> Result<ClusterJob> {
        self.update_job(
            id,
            Update::new()
                .inc("attempt", 1)
                .set("status", JobStatus::Retrying),
        )
        .await
    }

    /// RUNNING jobs started more than `stuck_after` ago, oldest start first.
    pub async fn stuck_jobs(&self, stuck_after: Duration) -> Result<Vec<ClusterJob>> {
        let filter = Filter::eq("status", JobStatus::Running)
            .and(Filter::lt("started_at", self.now().sub(stuck_after)));
        self.p
            .jobs
            .find(&Query::filter(filter).sort_asc("started_at"))
            .await
    }

    /// Recovers every stuck job (see [`stuck_jobs`](Self::stuck_jobs)) whose
    /// worker no longer holds its cluster's job lock. A job with attempts left is
    /// retried and its cluster's job lock released; an exhausted one fails, moving
    /// a CREATE's cluster to FAILED and a DESTROY's (or janitor destroy's) to
    /// DESTROY_FAILED. Each job's changes commit atomically.
    ///
    /// Run time alone does not make a job stuck: a job whose lock is live and
    /// recorded for it (its worker keeps renewing it) is still being worked on,
    /// however long it has run, and is left alone. Once that lock lapses, the next
    /// start of the job takes it over with a higher fencing token, so writes fenced
    /// by the old worker's lease are rejected.
    pub async fn recover_stuck_jobs(&self, stuck_after: Duration) -> Result<Vec<Recovery>> {
        let mut recovered = Vec::new();
        for job in self.stuck_jobs(stuck_after).await? {
            if self.holds_live_lock(&job).await? {
                tracing::debug!(job = %job.id, cluster = %job.cluster_id, "long-running job still holds its live job lock; not recovered");
                continue;
            }
            if let Some(action) = self.recover(&job, stuck_after).await? {
                self.release_lock_of(&job).await?;
                tracing::warn!(job = %job.id, cluster = %job.cluster_id, ?action, "recovered stuck job");
                recovered.push(Recovery {
                    job_id: job.id,
                    cluster_id: job.cluster_id,
                    action,
                });
            }
        }
        Ok(recovered)
    }

    async fn recover(
        &self,
        job: &ClusterJob,
        stuck_after: Duration,
    ) -> Result<Option<RecoveryAction>> {
        let now = self.now();
        let (job_id, cluster_id) = (job.id.clone(), job.cluster_id.clone());
        let message = format!("no progress reported for {}s", stuck_after.as_secs());
        run_transaction(self.p.store.as_ref(), TxOptions::default(), move |tx| {
            let (job_id, cluster_id, message) =
                (job_id.clone(), cluster_id.clone(), message.clone());
            async move {
                let jobs = tx.repository::<ClusterJob>()?;
                // Re-read under lock: the worker may have finished since the scan.
                let Some(job) = jobs.get_for_update(&job_id).await? else {
                    return Ok(None);
                };
                if job.status != JobStatus::Running
                    || job.started_at.is_none_or(|s| s >= now.sub(stuck_after))
                {
                    return Ok(None);
                }
                let base = Update::new()
                    .set("error_code", STUCK_ERROR_CODE)
                    .set("error_message", message)
                    .set("updated_at", now);
                if job.attempt < job.max_attempts {
                    let update = base
                        .inc("attempt", 1)
                        .set("status", JobStatus::Retrying)
                        .unset("started_at")
                        .unset("ended_at");
                    jobs.update_one(&job_id, &update).await?;
                    return Ok(Some(RecoveryAction::Retried));
                }
                jobs.update_one(
                    &job_id,
                    &base.set("status", JobStatus::Failed).set("ended_at", now),
                )
                .await?;
                if let Some(status) = exhausted_cluster_status(job.job_type) {
                    let clusters = tx.repository::<Cluster>()?;
                    let cluster = clusters
                        .get_for_update(&cluster_id)
                        .await?
                        .ok_or_else(|| not_found::<Cluster>("recover stuck job", &cluster_id))?;
                    clusters
                        .update_one(&cluster_id, &cluster_status_update(&cluster, status, now))
                        .await?;
                }
                Ok(Some(RecoveryAction::Failed))
            }
        })
        .await
    }

    /// Whether the cluster's job lock is live and its record names `job` with the
    /// live lease's fencing token, i.e. the job's worker still holds (and renews)
    /// the lock. A lock held for another job does not protect this one.
    async fn holds_live_lock(&self, job: &ClusterJob) -> Result<bool> {
        let name = Self::job_lock_name(&job.cluster_id);
        let Some(lease) = self.p.locks.current(&name).await? else {
            return Ok(false);
        };
        let Some(record) = self.p.job_locks.get(&job.cluster_id).await? else {
            return Ok(false);
        };
        Ok(record.job_id == job.id
            && i64::try_from(lease.token()).ok() == Some(record.fencing_token))
    }

    /// Releases the cluster's job lock if the lock record says this job holds it.
    async fn release_lock_of(&self, job: &ClusterJob) -> Result<()> {
        let Some(record) = self.p.job_locks.get(&job.cluster_id).await? else {
            return Ok(());
        };
        if record.job_id != job.id {
            return Ok(());
        }
        let name = Self::job_lock_name(&job.cluster_id);
        if let Some(lease) = self.p.locks.current(&name).await? {
            if i64::try_from(lease.token()).ok() == Some(record.fencing_token) {
                self.p.locks.force_release(&name).await?;
            }
        }
        let filter = Filter::eq("cluster_id", job.cluster_id.as_str())
            .and(Filter::eq("job_id", job.id.as_str()));
        self.p.job_locks.delete_many(&filter).await?;
        Ok(())
    }
}

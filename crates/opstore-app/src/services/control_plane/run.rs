//! Running a job start to finish in one call: start it, keep its lock alive,
//! run the work, record the outcome under the lock's fence, release the lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opstore_domain::entities::control_plane::{Cluster, ClusterJob, JobStatus};
use opstore_domain::{
    Filter, Lease, Repository, Result, StoreError, Timestamp, TxExt, TxOptions, Update,
    run_transaction,
};
use tokio_util::sync::CancellationToken;

use super::jobs::exhausted_cluster_status;
use super::{ControlPlaneService, cluster_status_update};
use crate::lease_keeper::{LeaseKeeper, LeaseKeeperConfig};
use crate::services::not_found;

/// How [`ControlPlaneService::run_job`] holds the job lock and retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobRunConfig {
    /// TTL of the job lock, asked for on acquisition and every renewal.
    pub lock_ttl: Duration,
    /// Renew after this fraction of the TTL, strictly between 0 and 1.
    pub renew_fraction: f64,
    /// How long a failed job with attempts left waits before a worker may
    /// pick it up again.
    pub retry_delay: Duration,
}

impl JobRunConfig {
    /// A lock of `lock_ttl` renewed every third of it; failed jobs wait
    /// `retry_delay` before their next attempt.
    pub fn new(lock_ttl: Duration, retry_delay: Duration) -> Self {
        JobRunConfig {
            lock_ttl,
            renew_fraction: 1.0 / 3.0,
            retry_delay,
        }
    }

    fn keeper(&self) -> LeaseKeeperConfig {
        LeaseKeeperConfig::new(self.lock_ttl, self.renew_fraction)
    }

    fn validate(&self, job_id: &str) -> Result<()> {
        let valid = self.renew_fraction > 0.0 && self.renew_fraction < 1.0;
        if self.lock_ttl.is_zero() || !valid {
            return Err(StoreError::Validation(format!(
                "run job `{job_id}`: lock_ttl must be positive and renew_fraction strictly between 0 and 1 (got {:?} and {})",
                self.lock_ttl, self.renew_fraction
            )));
        }
        Ok(())
    }
}

/// What the work of a running job gets.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job, RUNNING.
    pub job: ClusterJob,
    /// The cluster, in the status the job moved it to.
    pub cluster: Cluster,
    /// The job lock. Its fencing token stays the same across renewals, so
    /// writes the work fences with it are rejected once the lock is lost.
    pub lease: Lease,
    /// Fires when the job lock is lost; the work is stopped at its next await
    /// point either way, this lets it stop cleanly first.
    pub lease_lost: CancellationToken,
}

/// Why a job's work failed, recorded on the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// Machine-readable error code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl JobFailure {
    /// A failure with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobFailure {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// How a job run by [`ControlPlaneService::run_job`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRun<T> {
    /// The work finished and the job is SUCCEEDED.
    Succeeded {
        /// The job after the update.
        job: ClusterJob,
        /// What the work returned.
        output: T,
    },
    /// The work failed with attempts left: the job is RETRYING with its attempt
    /// counted, and waits for the configured retry delay.
    Retrying {
        /// The job after the update.
        job: ClusterJob,
        /// The failure.
        failure: JobFailure,
    },
    /// The work failed on the last attempt: the job is FAILED, and a CREATE's
    /// cluster FAILED, a DESTROY's DESTROY_FAILED.
    Failed {
        /// The job after the update.
        job: ClusterJob,
        /// The failure.
        failure: JobFailure,
    },
    /// The job lock was lost: the work was stopped (or finished too late) and
    /// nothing was recorded on the job, which stuck-job recovery or the lock's
    /// new holder deals with.
    LeaseLost {
        /// The job.
        job_id: String,
    },
}

/// The outcome to record, without the work's output so the transaction may rerun.
#[derive(Clone)]
enum Finish {
    Succeeded,
    Failed(JobFailure),
}

impl ControlPlaneService {
    /// Runs a pending job the way every worker must, in one call:
    ///
    /// 1. [`start_job`](Self::start_job) (the lock, then one transaction that
    ///    validates and commits the start), without the installed hook;
    /// 2. a [`LeaseKeeper`] renews the job lock while `work` runs, and `work`
    ///    is stopped (dropped at its next await point) when the lock is lost;
    /// 3. the outcome is recorded in a transaction fenced by the lock, so a
    ///    holder that lost it records nothing: success marks the job SUCCEEDED;
    ///    a failure with attempts left counts the attempt and marks it RETRYING
    ///    after `retry_delay`; a failure on the last attempt marks it FAILED and
    ///    moves a CREATE's cluster to FAILED, a DESTROY's to DESTROY_FAILED;
    /// 4. the lock and its record are released.
    ///
    /// Errors of the start (`LockHeld`, `Conflict`, `NotFound`) and of the
    /// store are returned as such; a lost lock is [`JobRun::LeaseLost`].
    pub async fn run_job<T, F, Fut>(
        &self,
        job_id: &str,
        worker: &str,
        config: &JobRunConfig,
        work: F,
    ) -> Result<JobRun<T>>
    where
        F: FnOnce(JobContext) -> Fut,
        Fut: Future<Output = std::result::Result<T, JobFailure>>,
    {
        config.validate(job_id)?;
        let started = self
            .start_job_unhooked(job_id, worker, config.lock_ttl)
            .await?;
        let keeper = match LeaseKeeper::start(
            started.lease.clone(),
            Arc::clone(&self.p.locks),
            config.keeper(),
        ) {
            Ok(keeper) => keeper,
            Err(e) => {
                self.release_after_run(&started.lease).await;
                return Err(e);
            }
        };
        let lease_lost = keeper.cancellation_token();
        let context = JobContext {
            job: started.job,
            cluster: started.cluster,
            lease: started.lease,
            lease_lost: lease_lost.clone(),
        };
        let outcome = tokio::select! {
            biased;
            _ = lease_lost.cancelled() => None,
            out = work(context) => Some(out),
        };
        let lease = keeper.lease();
        let result = match outcome {
            None => {
                tracing::warn!(job = %job_id, lock = %lease.name(), "job lock lost; work stopped");
                Ok(JobRun::LeaseLost {
                    job_id: job_id.to_owned(),
                })
            }
            Some(Ok(output)) => self
                .finish_job(job_id, &lease, Finish::Succeeded, config.retry_delay)
                .await
                .map(|job| match job {
                    Some(job) => JobRun::Succeeded { job, output },
                    None => JobRun::LeaseLost {
                        job_id: job_id.to_owned(),
                    },
                }),
            Some(Err(failure)) => self
                .finish_job(
                    job_id,
                    &lease,
                    Finish::Failed(failure.clone()),
                    config.retry_delay,
                )
                .await
                .map(|job| match job {
                    Some(job) if job.status == JobStatus::Failed => JobRun::Failed { job, failure },
                    Some(job) => JobRun::Retrying { job, failure },
                    None => JobRun::LeaseLost {
                        job_id: job_id.to_owned(),
                    },
                }),
        };
        match keeper.release().await {
            Ok(()) => self.delete_lock_record(&lease).await,
            Err(e) if e.is_lock_lost() => {
                tracing::debug!(job = %job_id, lock = %lease.name(), "job lock already lost at release");
            }
            Err(e) => {
                tracing::warn!(job = %job_id, lock = %lease.name(), error = %e, "releasing the job lock");
            }
        }
        result
    }

    /// Records the outcome under the fence of `lease`; `None` when the lease is
    /// no longer the live holder (nothing was written).
    async fn finish_job(
        &self,
        job_id: &str,
        lease: &Lease,
        finish: Finish,
        retry_delay: Duration,
    ) -> Result<Option<ClusterJob>> {
        let now = self.now();
        let (id, fence) = (job_id.to_owned(), lease.clone());
        let finished = run_transaction(self.p.store.as_ref(), TxOptions::default(), move |tx| {
            let (job_id, lease, finish) = (id.clone(), fence.clone(), finish.clone());
            async move {
                tx.check_fence(&lease).await?;
                let jobs = tx.repository::<ClusterJob>()?;
                let job = jobs
                    .get_for_update(&job_id)
                    .await?
                    .ok_or_else(|| not_found::<ClusterJob>("finish job", &job_id))?;
                if job.status != JobStatus::Running {
                    return Err(StoreError::Conflict(format!(
                        "finish job `{job_id}` in `cluster_jobs`: status is {}, not RUNNING",
                        job.status.as_str()
                    )));
                }
                let failure = match finish {
                    Finish::Succeeded => {
                        let update = Update::new()
                            .set("status", JobStatus::Succeeded)
                            .set("ended_at", now)
                            .set("updated_at", now);
                        return jobs.update_one(&job_id, &update).await;
                    }
                    Finish::Failed(failure) => failure,
                };
                let base = Update::new()
                    .set("error_code", failure.code)
                    .set("error_message", failure.message)
                    .set("updated_at", now);
                if job.attempt < job.max_attempts {
                    let update = base
                        .inc("attempt", 1)
                        .set("status", JobStatus::Retrying)
                        .set("retry_after", retry_at(now, retry_delay))
                        .unset("started_at")
                        .unset("ended_at");
                    return jobs.update_one(&job_id, &update).await;
                }
                let update = base.set("status", JobStatus::Failed).set("ended_at", now);
                let job = jobs.update_one(&job_id, &update).await?;
                if let Some(status) = exhausted_cluster_status(job.job_type) {
                    let clusters = tx.repository::<Cluster>()?;
                    let cluster = clusters
                        .get_for_update(&job.cluster_id)
                        .await?
                        .ok_or_else(|| not_found::<Cluster>("finish job", &job.cluster_id))?;
                    clusters
                        .update_one(
                            &job.cluster_id,
                            &cluster_status_update(&cluster, status, now),
                        )
                        .await?;
                }
                Ok(job)
            }
        })
        .await;
        match finished {
            Ok(job) => Ok(Some(job)),
            Err(e) if e.is_lock_lost() => {
                tracing::warn!(job = %job_id, lock = %lease.name(), "job lock lost before the outcome was recorded");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Releases a lease that no keeper holds, and its record.
    async fn release_after_run(&self, lease: &Lease) {
        if let Err(e) = self.release_job_lock(lease).await {
            tracing::warn!(lock = %lease.name(), error = %e, "releasing the job lock");
        }
    }

    /// Deletes the lock record of `lease`, leaving a newer holder's record.
    async fn delete_lock_record(&self, lease: &Lease) {
        let cluster_id = lease
            .name()
            .strip_prefix("cluster-job/")
            .unwrap_or(lease.name());
        let filter = Filter::eq("cluster_id", cluster_id).and(Self::token_filter(lease));
        if let Err(e) = self.p.job_locks.delete_many(&filter).await {
            tracing::warn!(lock = %lease.name(), error = %e, "deleting the job lock record");
        }
    }
}

fn retry_at(now: Timestamp, delay: Duration) -> Timestamp {
    now.add(delay)
}

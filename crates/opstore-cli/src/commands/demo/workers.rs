//! Drain workers and the reaper: the control plane's worker pattern (job lock
//! lease, heartbeats through a [`LeaseKeeper`], fenced writes) and the recovery
//! of jobs whose worker vanished.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opstore_app::lease_keeper::{LeaseKeeper, LeaseKeeperConfig};
use opstore_app::services::control_plane::{RecoveryAction, StartedJob};
use opstore_app::services::health::StatusChange;
use opstore_domain::entities::control_plane::{ClusterJob, JobStatus};
use opstore_domain::entities::errors::{RemediationLog, RemediationOutcome};
use opstore_domain::entities::health::{OperationState, OperationStatus, QuarantineStatus};
use opstore_domain::{Filter, Lease, Query, Repository, StoreError, Timestamp};
use tokio_util::sync::CancellationToken;

use super::config::QUARANTINE;
use super::state::{Pipeline, lock};
use crate::error::CliError;

/// Jobs a worker tries per round.
const BATCH: usize = 16;
/// First and longest pause after a transient store error (timeout, lost connection).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// Sleeps `delay` unless `stop` fires first; false when stopped.
async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

impl Pipeline {
    /// A drain worker: starts this run's due jobs until told to stop. Workers
    /// start at different offsets of the due list so they rarely race for one
    /// job, and sleep until a job is queued (or a short poll passes) when
    /// nothing could be started. Transient store errors are retried; any
    /// other error ends the worker and, through the waits, the run.
    pub(super) async fn worker(
        self: Arc<Self>,
        index: usize,
        stop: CancellationToken,
    ) -> Result<(), CliError> {
        let name = format!("drain-worker-{index}");
        let mut backoff = BACKOFF.0;
        loop {
            // Registered before listing, so a job queued meanwhile still wakes us.
            let queued = self.job_queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            if stop.is_cancelled() {
                return Ok(());
            }
            match self.work_once(&name, index).await {
                Ok(true) => {
                    backoff = BACKOFF.0;
                    continue;
                }
                Ok(false) => backoff = BACKOFF.0,
                Err(e) if e.is_transient() => {
                    tracing::warn!(worker = %name, error = %e, ?backoff, "store unavailable; retrying");
                    if !pause(&stop, backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
                Err(e) => return Err(CliError::store(&name, e)),
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = &mut queued => {}
                _ = tokio::time::sleep(self.timing.idle_poll) => {}
            }
        }
    }

    /// This run's due jobs, oldest first. Only the run's own: on a shared
    /// server, other runs' jobs are theirs to drain, and a backlog of jobs that
    /// cannot start must not hide ours. A job that any reaper failed for good
    /// is recorded as such, so the waits stop counting on it.
    async fn due_jobs(&self) -> Result<Vec<ClusterJob>, StoreError> {
        let outstanding = self.outstanding_jobs();
        if outstanding.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = self
            .jobs
            .find(&Query::filter(Filter::is_in("id", outstanding)).sort_asc("created_at"))
            .await?;
        let now = Timestamp::now();
        let mut due = Vec::new();
        for job in jobs {
            match job.status {
                JobStatus::Pending | JobStatus::Retrying
                    if job.retry_after.is_none_or(|at| at <= now) =>
                {
                    due.push(job);
                }
                JobStatus::Failed => {
                    let why = job.error_message.clone().unwrap_or_default();
                    tracing::warn!(job = %job.id, error = %why, "drain job failed for good");
                    lock(&self.jobs_failed).insert(job.id, why);
                }
                _ => {}
            }
        }
        due.truncate(BATCH);
        Ok(due)
    }

    /// Tries each due job once; true when one was started.
    async fn work_once(&self, name: &str, index: usize) -> Result<bool, StoreError> {
        let mut jobs = self.due_jobs().await?;
        if !jobs.is_empty() {
            let offset = index % jobs.len();
            jobs.rotate_left(offset);
        }
        let mut started_any = false;
        for job in jobs {
            match self
                .control
                .start_job(&job.id, name, self.timing.lease_ttl)
                .await
            {
                Ok(started) => {
                    started_any = true;
                    tracing::debug!(worker = name, job = %job.id, attempt = started.job.attempt, "job started");
                    self.drain(name, started).await?;
                }
                // Another worker got there first, or took the lock over
                // before our start committed; the job is someone else's.
                Err(e) if e.is_lock_held() || e.is_conflict() || e.is_lock_lost() => {
                    tracing::debug!(worker = name, job = %job.id, error = %e, "job not started");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(started_any)
    }

    async fn drain(&self, worker: &str, started: StartedJob) -> Result<(), StoreError> {
        let job = started.job;
        let lease = started.lease;
        if job.attempt > 1 {
            lock(&self.recovered).insert(job.id.clone());
        }
        self.note_takeover(&job, &lease).await?;
        let keeper = LeaseKeeper::start(
            lease.clone(),
            self.store.locks(),
            LeaseKeeperConfig::new(self.timing.lease_ttl, 1.0 / 3.0),
        )?;
        let meta = job.metadata.clone().unwrap_or_default();
        let text = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (node, event_id, fingerprint) = (text("node"), text("event"), text("fingerprint"));
        if job.attempt == 1 && meta.get("crash").and_then(|v| v.as_bool()) == Some(true) {
            // The worker dies holding the lease: no renewals, no release.
            tracing::debug!(worker, job = %job.id, "worker crashes holding the lease");
            lock(&self.crashed).push((job.id.clone(), lease));
            drop(keeper);
            return Ok(());
        }
        let lost = keeper.cancellation_token();
        // Fenced write: only the live holder may touch the node's events, and an
        // operator's cancellation always wins over the drain.
        let fence = self.store.locks().check(&keeper.lease()).await;
        if lost.is_cancelled() || fence.is_err() {
            tracing::warn!(worker, job = %job.id, "lease lost before the drain; leaving the job to recovery");
            return Ok(());
        }
        let drained = StatusChange::Eviction(OperationStatus {
            status: OperationState::Succeeded,
            message: Some(format!("user pods evicted by {worker}")),
        })
        .to_update(Timestamp::now());
        let not_cancelled = Filter::eq("id", event_id.as_str())
            .and(Filter::ne(QUARANTINE, QuarantineStatus::Cancelled.as_str()));
        let touched = self
            .health_events
            .update_many(&not_cancelled, &drained)
            .await?
            .modified;
        *lock(&self.executions).entry(job.id.clone()).or_insert(0) += 1;
        let error_id = self
            .errors
            .get_by_fingerprint(&fingerprint)
            .await?
            .map(|e| e.id)
            .unwrap_or_default();
        self.errors
            .save_remediation_log(RemediationLog {
                id: String::new(),
                error_id,
                action: "drain".into(),
                target: node,
                status: if touched > 0 {
                    RemediationOutcome::Success
                } else {
                    RemediationOutcome::Skipped
                },
                message: format!("job {} by {worker}", job.id),
                timestamp: Timestamp::now(),
                dry_run: false,
            })
            .await?;
        self.remediation_logs.fetch_add(1, Ordering::Relaxed);
        self.control.mark_job_succeeded(&job.id, None).await?;
        let held = keeper.lease();
        drop(keeper);
        if let Err(e) = self.control.release_job_lock(&held).await {
            tracing::warn!(worker, job = %job.id, error = %e, "releasing the job lock");
        }
        self.jobs_done.fetch_add(1, Ordering::Relaxed);
        lock(&self.jobs_finished).insert(job.id.clone());
        tracing::debug!(worker, job = %job.id, "job done");
        Ok(())
    }

    /// A job started again after its first worker crashed: the new lease took the
    /// expired one over, and the crashed holder's fenced check now fails.
    async fn note_takeover(&self, job: &ClusterJob, lease: &Lease) -> Result<(), StoreError> {
        let stale = lock(&self.crashed)
            .iter()
            .find(|(id, _)| id == &job.id)
            .map(|(_, l)| l.clone());
        let Some(stale) = stale else {
            return Ok(());
        };
        if lease.token() > stale.token() {
            self.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        match self.store.locks().check(&stale).await {
            Err(e) if e.is_lock_lost() => {
                self.fenced.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// Recovers jobs whose worker vanished, until told to stop. The control
    /// plane recovers every stuck job on the store, other runs' included; this
    /// run's recovered jobs are counted when a worker starts them again.
    pub(super) async fn reaper(self: Arc<Self>, stop: CancellationToken) -> Result<(), CliError> {
        let mut delay = self.timing.reap_every;
        loop {
            if !pause(&stop, delay).await {
                return Ok(());
            }
            delay = self.timing.reap_every;
            let recovered = match self
                .control
                .recover_stuck_jobs(self.timing.stuck_after)
                .await
            {
                Ok(recovered) => recovered,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "recovering stuck jobs; retrying");
                    delay = BACKOFF.1;
                    continue;
                }
                Err(e) => return Err(CliError::store("reaper: recovering stuck jobs", e)),
            };
            let ours = lock(&self.jobs_created).clone();
            for r in recovered.into_iter().filter(|r| ours.contains(&r.job_id)) {
                tracing::info!(job = %r.job_id, action = ?r.action, "drain job recovered");
                if r.action == RecoveryAction::Failed {
                    lock(&self.jobs_failed)
                        .insert(r.job_id, "attempts exhausted after stalls".to_owned());
                }
                self.job_queued.notify_waiters();
            }
        }
    }
}

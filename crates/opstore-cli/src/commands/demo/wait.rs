//! Bounded waits. A wait ends when its condition holds, when a task of the
//! pipeline fails, or when nothing moves for the stall timeout; then it names
//! the phase and the invariant that did not complete, instead of hanging.

use std::fmt;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use opstore_app::processor::{ProcessorHandle, ProcessorReport};
use opstore_domain::Timestamp;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::config::POLL;
use super::state::Pipeline;
use crate::error::CliError;

/// The drain workers and the reaper.
pub(super) type Tasks = JoinSet<Result<(), CliError>>;

/// Where a run can wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The store opens and its schema is applied.
    Opening,
    /// The fleet's clusters are registered.
    RegisteringNodes,
    /// The producer writes events.
    Producing,
    /// The operator cancels a session.
    Cancelling,
    /// Before the operator acts, every event so far is handled and every job done.
    FirstHalf,
    /// After the last event, the same for the whole run.
    Draining,
    /// The workers and the reaper end.
    StoppingWorkers,
    /// The processor writes its checkpoint and ends.
    StoppingProcessor,
    /// The invariants are read back from the store.
    Checking,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Opening => "opening the store",
            Phase::RegisteringNodes => "registering the nodes",
            Phase::Producing => "producing events",
            Phase::Cancelling => "cancelling a quarantine session",
            Phase::Checking => "checking the invariants",
            Phase::FirstHalf => "waiting for the first half of the events",
            Phase::Draining => "draining the pipeline",
            Phase::StoppingWorkers => "stopping the drain workers",
            Phase::StoppingProcessor => "stopping the quarantine processor",
        })
    }
}

/// Watches the pipeline's tasks while the run waits on them.
pub(super) struct Supervisor<'a> {
    pub pipeline: &'a Pipeline,
    pub processor: &'a ProcessorHandle,
    pub tasks: Tasks,
    pub progress: &'a ProgressBar,
    pub stall_timeout: Duration,
}

/// Events and jobs not finished yet.
#[derive(Debug)]
struct Pending {
    events_done: u64,
    events: u64,
    jobs: Vec<String>,
    jobs_created: usize,
}

impl Supervisor<'_> {
    fn pending(&self, stored: usize) -> Pending {
        let stats = self.processor.stats();
        Pending {
            events_done: self.pipeline.processed_count() + stats.dead_lettered,
            events: stored as u64,
            jobs: self.pipeline.outstanding_jobs(),
            jobs_created: super::state::lock(&self.pipeline.jobs_created).len(),
        }
    }

    /// Moves whenever the pipeline or the processor does.
    fn marker(&self) -> u64 {
        let stats = self.processor.stats();
        self.pipeline.progress_marker()
            + stats.handled
            + stats.failures
            + stats.dead_lettered
            + stats.acknowledged
    }

    /// Waits until the processor has finished every stored event and the
    /// workers every queued job.
    pub(super) async fn wait_idle(&mut self, phase: Phase, stored: usize) -> Result<(), CliError> {
        let mut marker = self.marker();
        let mut moved = Instant::now();
        let mut logged = Instant::now();
        loop {
            let pending = self.pending(stored);
            self.progress.set_position(pending.events_done);
            if pending.events_done >= pending.events && pending.jobs.is_empty() {
                tracing::debug!(%phase, events = pending.events, jobs = pending.jobs_created, "pipeline idle");
                return Ok(());
            }
            if self.processor.is_finished() {
                return Err(CliError::runtime(format!(
                    "demo failed while {phase}: the quarantine processor stopped unexpectedly"
                )));
            }
            // A crashed worker's job is recovered only after `stuck_after`; that
            // quiet time is planned, not a stall.
            let limit = if self.pipeline.awaiting_recovery() {
                self.stall_timeout + self.pipeline.timing.stuck_after
            } else {
                self.stall_timeout
            };
            let now = self.marker();
            if now != marker {
                (marker, moved) = (now, Instant::now());
            } else if moved.elapsed() >= limit {
                return Err(self.stalled(phase, &pending, limit).await);
            }
            if logged.elapsed() >= Duration::from_secs(1) {
                logged = Instant::now();
                tracing::debug!(
                    %phase,
                    events_done = pending.events_done,
                    events = pending.events,
                    jobs_outstanding = pending.jobs.len(),
                    idle_for = ?moved.elapsed(),
                    "waiting"
                );
            }
            tokio::select! {
                joined = self.tasks.join_next() => return Err(task_ended(phase, joined)),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Stops the workers and the reaper, each wait bounded by the stall timeout.
    pub(super) async fn stop_tasks(&mut self, stop: &CancellationToken) -> Result<(), CliError> {
        stop.cancel();
        let phase = Phase::StoppingWorkers;
        let joined = tokio::time::timeout(self.stall_timeout, async {
            while let Some(joined) = self.tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    other => return Err(task_ended(phase, Some(other))),
                }
            }
            Ok(())
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(_) => {
                self.tasks.abort_all();
                Err(CliError::runtime(format!(
                    "demo stalled while {phase}: still running {} s after the stop",
                    self.stall_timeout.as_secs_f64()
                )))
            }
        }
    }

    /// Explains a stall: the phase, and which invariant has not been reached
    /// with the figures and the unfinished jobs' state in the store.
    async fn stalled(&self, phase: Phase, pending: &Pending, limit: Duration) -> CliError {
        let mut parts = Vec::new();
        if pending.events_done < pending.events {
            let stats = self.processor.stats();
            parts.push(format!(
                "`every event processed or dead-lettered` not reached: {} of {} events \
                 processed or dead-lettered (the processor handled {} changes, {} failed attempts)",
                pending.events_done, pending.events, stats.handled, stats.failures
            ));
        }
        if !pending.jobs.is_empty() {
            let mut jobs = Vec::new();
            for id in pending.jobs.iter().take(3) {
                jobs.push(self.describe_job(id).await);
            }
            parts.push(format!(
                "`no job run twice` not reached: {} of {} drain jobs unfinished ({})",
                pending.jobs.len(),
                pending.jobs_created,
                jobs.join(", ")
            ));
        }
        tracing::error!(%phase, parts = ?parts, "demo stalled");
        CliError::runtime(format!(
            "demo stalled while {phase}: no progress for {} s; {}",
            limit.as_secs_f64(),
            parts.join("; ")
        ))
    }

    /// One job as the store has it, or why it could not be read.
    async fn describe_job(&self, id: &str) -> String {
        let read = tokio::time::timeout(Duration::from_secs(5), self.pipeline.control.get_job(id));
        match read.await {
            Ok(Ok(Some(job))) => {
                let running = job
                    .started_at
                    .map(|s| {
                        let ago = Timestamp::now().since(s).as_secs_f64();
                        format!(", started {ago:.1} s ago")
                    })
                    .unwrap_or_default();
                let error = job
                    .error_code
                    .map(|c| format!(", last error {c}"))
                    .unwrap_or_default();
                format!(
                    "job `{id}` {} attempt {}/{}{running}{error}",
                    job.status.as_str(),
                    job.attempt,
                    job.max_attempts
                )
            }
            Ok(Ok(None)) => format!("job `{id}` missing from the store"),
            Ok(Err(e)) => format!("job `{id}` unreadable: {e}"),
            Err(_) => format!("job `{id}` unreadable: the store did not answer"),
        }
    }
}

/// Runs `work`, one step of the run that calls the store, giving up after
/// `limit`: a server that stops answering must not hang the run.
pub(super) async fn bounded<T>(
    phase: Phase,
    limit: Duration,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(%phase, ?limit, "the store did not answer");
            Err(CliError::runtime(format!(
                "demo stalled while {phase}: the store did not answer within {} s",
                limit.as_secs_f64()
            )))
        }
    }
}

/// Stops the processor, bounded by `limit`.
pub(super) async fn stop_processor(
    processor: ProcessorHandle,
    limit: Duration,
) -> Result<ProcessorReport, CliError> {
    let phase = Phase::StoppingProcessor;
    let token = processor.cancellation_token();
    match tokio::time::timeout(limit, processor.stop()).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(CliError::runtime(format!("demo failed while {phase}: {e}"))),
        Err(_) => {
            token.cancel();
            Err(CliError::runtime(format!(
                "demo stalled while {phase}: still running {} s after the stop",
                limit.as_secs_f64()
            )))
        }
    }
}

/// The error for a task that ended while the run still needed it.
fn task_ended(phase: Phase, joined: Option<Result<Result<(), CliError>, JoinError>>) -> CliError {
    let why = match joined {
        Some(Ok(Err(e))) => e.line(),
        Some(Ok(Ok(()))) => "a drain worker or the reaper ended before it was stopped".to_owned(),
        Some(Err(e)) => format!("a drain worker or the reaper failed: {e}"),
        None => "no drain worker is running".to_owned(),
    };
    CliError::runtime(format!("demo failed while {phase}: {why}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use opstore_app::{DataStore, StoreConfig};

    use super::*;
    use crate::commands::demo::config::Timing;
    use crate::commands::demo::processors;
    use crate::commands::demo::state::lock;

    #[tokio::test]
    async fn a_store_step_that_never_answers_ends_naming_the_phase() {
        let never = std::future::pending::<Result<(), CliError>>();
        let e = bounded(Phase::Producing, Duration::from_millis(50), never)
            .await
            .unwrap_err();
        assert_eq!(
            e.line(),
            "demo stalled while producing events: the store did not answer within 0.05 s"
        );
        assert_eq!(e.code(), 1);
    }

    #[test]
    fn task_failures_name_the_phase_and_the_cause() {
        let e = task_ended(
            Phase::Draining,
            Some(Ok(Err(CliError::runtime("drain-worker-1: timed out")))),
        );
        assert_eq!(
            e.line(),
            "demo failed while draining the pipeline: drain-worker-1: timed out"
        );
        assert_eq!(e.code(), 1);
        let e = task_ended(Phase::FirstHalf, None);
        assert!(e.line().contains("no drain worker is running"), "{e}");
    }

    /// A pipeline on a fresh memory store with its processor running.
    async fn pipeline() -> (DataStore, Arc<Pipeline>, ProcessorHandle) {
        let store = DataStore::open(&StoreConfig::from_url("memory://").unwrap())
            .await
            .unwrap();
        let timing = Timing::for_backend("memory");
        let p = Pipeline::open(&store, "demo-test".into(), timing, HashMap::new(), 0).unwrap();
        let p = Arc::new(p);
        let (processor, _) = processors::spawn(&p, &store).unwrap();
        (store, p, processor)
    }

    #[tokio::test]
    async fn a_wait_on_a_job_that_never_finishes_ends_naming_phase_and_invariant() {
        let (_store, p, processor) = pipeline().await;
        lock(&p.jobs_created).insert("job_never".into());
        let stop = CancellationToken::new();
        let mut tasks = Tasks::new();
        let idle = stop.clone();
        tasks.spawn(async move {
            idle.cancelled().await;
            Ok(())
        });
        let progress = ProgressBar::hidden();
        let mut supervisor = Supervisor {
            pipeline: &p,
            processor: &processor,
            tasks,
            progress: &progress,
            stall_timeout: Duration::from_millis(200),
        };
        let e = supervisor.wait_idle(Phase::Draining, 0).await.unwrap_err();
        let line = e.line();
        assert_eq!(e.code(), 1);
        assert!(
            line.starts_with("demo stalled while draining the pipeline: no progress for 0.2 s"),
            "{line}"
        );
        assert!(
            line.contains("`no job run twice` not reached: 1 of 1 drain jobs unfinished"),
            "{line}"
        );
        assert!(
            line.contains("job `job_never` missing from the store"),
            "{line}"
        );
        supervisor.stop_tasks(&stop).await.unwrap();
        stop_processor(processor, Duration::from_secs(30))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_worker_ends_the_wait_with_its_error() {
        let (_store, p, processor) = pipeline().await;
        lock(&p.jobs_created).insert("job_pending".into());
        let mut tasks = Tasks::new();
        tasks.spawn(async { Err(CliError::runtime("drain-worker-0: connection refused")) });
        let progress = ProgressBar::hidden();
        let mut supervisor = Supervisor {
            pipeline: &p,
            processor: &processor,
            tasks,
            progress: &progress,
            stall_timeout: Duration::from_secs(3_600),
        };
        let e = supervisor.wait_idle(Phase::FirstHalf, 0).await.unwrap_err();
        assert_eq!(
            e.line(),
            "demo failed while waiting for the first half of the events: \
             drain-worker-0: connection refused"
        );
        stop_processor(processor, Duration::from_secs(30))
            .await
            .unwrap();
    }
}

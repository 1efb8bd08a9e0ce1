//! The worker that runs a handler over a [`JobQueue`]: a claimer that prefetches
//! the next batch, an acknowledger that writes outcomes in batches, and an
//! extender that keeps running jobs' claims alive.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_domain::{Entity, Result, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::queue::{AckCount, Claim, JobQueue};

/// How a [`JobWorker`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobWorkerConfig {
    /// The name claims are recorded under.
    pub owner: String,
    /// Jobs taken per claim; the next batch is claimed while one runs.
    pub batch_size: NonZeroUsize,
    /// Handlers running at once.
    pub concurrency: NonZeroUsize,
    /// Acknowledgements written at once, at most.
    pub ack_batch: NonZeroUsize,
    /// How long a finished job may wait for others to share its acknowledgement.
    pub ack_interval: Duration,
    /// How long a claim lasts; claims of jobs not yet finished are extended
    /// every third of it.
    pub claim_ttl: Duration,
    /// Pause after a claim found nothing due.
    pub idle_poll: Duration,
    /// How often lapsed claims are requeued; `None` leaves it to others.
    pub requeue_every: Option<Duration>,
}

/// A claimed job handed to the handler.
#[derive(Debug, Clone)]
pub struct ClaimedJob<T> {
    /// The job after the claim.
    pub job: T,
    /// The claim it is held under.
    pub claim: Claim,
    /// Fires when the claim is lost (it lapsed and was requeued or taken over);
    /// the handler should stop, its outcome will be rejected.
    pub claim_lost: CancellationToken,
}

/// Why a handler failed a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counters of a [`JobWorker::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Successes recorded.
    pub succeeded: u64,
    /// Failures recorded.
    pub failed: u64,
    /// Outcomes rejected because the claim was lost.
    pub rejected: u64,
    /// Claimed jobs put back unstarted at stop.
    pub released: u64,
    /// Lapsed claims this worker requeued.
    pub requeued: u64,
}

/// Jobs claimed and not yet acknowledged, with the signal that stops their work.
type Outstanding = Arc<Mutex<HashMap<Claim, CancellationToken>>>;

/// The map even if a holder panicked: every update to it is a single insert or
/// remove, so it is never left half-changed.
fn locked(out: &Outstanding) -> std::sync::MutexGuard<'_, HashMap<Claim, CancellationToken>> {
    out.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a handler over a [`JobQueue`].
///
/// ```
/// # use std::sync::LazyLock;
/// # use opstore_domain::{Entity, Field, FieldType, Schema, Timestamp};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # struct Drain {
/// #     id: String,
/// #     status: String,
/// #     #[serde(default, skip_serializing_if = "Option::is_none")]
/// #     due_at: Option<Timestamp>,
/// #     #[serde(default, skip_serializing_if = "Option::is_none")]
/// #     claimed_by: Option<String>,
/// #     #[serde(default, skip_serializing_if = "Option::is_none")]
/// #     claim_token: Option<String>,
/// #     #[serde(default, skip_serializing_if = "Option::is_none")]
/// #     claimed_until: Option<Timestamp>,
/// # }
/// # static DRAIN: LazyLock<Schema> = LazyLock::new(|| {
/// #     Schema::builder("drains", "id")
/// #         .field(Field::new("status", FieldType::String).indexed())
/// #         .field(Field::new("due_at", FieldType::Timestamp).indexed().optional())
/// #         .field(Field::new("claimed_by", FieldType::String).optional())
/// #         .field(Field::new("claim_token", FieldType::String).optional())
/// #         .field(Field::new("claimed_until", FieldType::Timestamp).indexed().optional())
/// #         .build()
/// # });
/// # impl Entity for Drain {
/// #     fn schema() -> &'static Schema { &DRAIN }
/// #     fn key(&self) -> String { self.id.clone() }
/// # }
/// # fn drain(id: &str, due_at: Timestamp) -> Drain {
/// #     Drain { id: id.into(), status: "pending".into(), due_at: Some(due_at),
/// #             claimed_by: None, claim_token: None, claimed_until: None }
/// # }
/// # fn updates() -> opstore_app::worker::QueueUpdates {
/// #     use opstore_app::worker::{Completion, FailurePolicy, QueueUpdates};
/// #     use opstore_domain::Update;
/// #     QueueUpdates {
/// #         on_claim: Update::new().set("status", "running"),
/// #         on_success: Completion::Update(Update::new().set("status", "done")),
/// #         on_failure: FailurePolicy { update: Update::new().set("status", "failed"), retry_after: None },
/// #         on_requeue: Update::new().set("status", "pending"),
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroUsize;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use opstore_app::worker::{ClaimedJob, JobQueue, JobWorker, JobWorkerConfig, QueueFields};
/// use opstore_app::{DataStore, StoreConfig};
/// use opstore_domain::{Filter, Repository};
/// use tokio::sync::mpsc;
/// use tokio_util::sync::CancellationToken;
///
/// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
/// let drains = Arc::new(store.repository::<Drain>()?);
/// let now = Timestamp::now();
/// drains.insert_many(&[drain("n1", now), drain("n2", now), drain("n3", now)]).await?;
///
/// let queue = JobQueue::new(drains.clone(), QueueFields::standard(), updates())?;
/// let config = JobWorkerConfig {
///     owner: "drainer-1".into(),
///     batch_size: NonZeroUsize::new(2).unwrap(),
///     concurrency: NonZeroUsize::new(2).unwrap(),
///     ack_batch: NonZeroUsize::new(8).unwrap(),
///     ack_interval: Duration::from_millis(10),
///     claim_ttl: Duration::from_secs(30),
///     idle_poll: Duration::from_millis(10),
///     requeue_every: Some(Duration::from_secs(10)),
/// };
/// let (done_tx, mut done) = mpsc::unbounded_channel();
/// let handler = move |job: ClaimedJob<Drain>| {
///     let done_tx = done_tx.clone();
///     async move {
///         // `job.claim_lost` fires if the claim lapses: stop, the outcome would be rejected.
///         let _ = done_tx.send(job.job.id);
///         Ok(())
///     }
/// };
/// let stop = CancellationToken::new();
/// let worker = tokio::spawn(JobWorker::new(queue, config)?.run(handler, stop.clone()));
/// for _ in 0..3 {
///     done.recv().await;
/// }
/// // A stop waits for running handlers and writes every outcome before returning.
/// stop.cancel();
/// let stats = worker.await??;
/// assert_eq!(stats.succeeded, 3);
/// assert_eq!(drains.count(&Filter::eq("status", "done")).await?, 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JobWorker<T: Entity> {
    queue: JobQueue<T>,
    config: JobWorkerConfig,
}

impl<T: Entity> JobWorker<T> {
    /// A worker over `queue`. `Validation` error for a zero claim TTL.
    pub fn new(queue: JobQueue<T>, config: JobWorkerConfig) -> Result<Self> {
        if config.claim_ttl.is_zero() {
            return Err(StoreError::Validation(format!(
                "job worker `{}` on `{}`: claim_ttl must be positive",
                config.owner,
                T::schema().name()
            )));
        }
        Ok(JobWorker { queue, config })
    }

    /// Claims and runs jobs until `stop` fires, then stops claiming, puts back
    /// the jobs it claimed but did not start, waits for running handlers and
    /// writes their outcomes. A store error ends the run (after the same
    /// cleanup) and is returned.
    pub async fn run<H, Fut>(self, handler: H, stop: CancellationToken) -> Result<WorkerStats>
    where
        H: Fn(ClaimedJob<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), JobError>> + Send + 'static,
    {
        let JobWorker { queue, config } = self;
        let handler = Arc::new(handler);
        let outstanding: Outstanding = Arc::new(Mutex::new(HashMap::new()));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        // The acker and the claim extender stop when this fires, after the claimer.
        let done = CancellationToken::new();
        let acker = tokio::spawn(acknowledge(
            queue.clone(),
            config.clone(),
            Arc::clone(&outstanding),
            ack_rx,
        ));
        let extender = tokio::spawn(extend_claims(
            queue.clone(),
            config.clone(),
            Arc::clone(&outstanding),
            done.clone(),
        ));
        let mut stats = WorkerStats::default();
        let claimed = claim_loop(
            &queue,
            &config,
            &handler,
            &outstanding,
            &ack_tx,
            &stop,
            &mut stats,
        )
        .await;
        drop(ack_tx);
        let acked = acker.await;
        done.cancel();
        if let Err(e) = extender.await {
            tracing::warn!(error = %e, "claim extender failed");
        }
        let acked = acked.map_err(|e| StoreError::Backend {
            message: format!("job worker `{}`: acknowledgement task failed", config.owner),
            source: Some(Box::new(e)),
        })?;
        let (succeeded, failed) = acked?;
        stats.succeeded = succeeded.acked;
        stats.failed = failed.acked;
        stats.rejected += succeeded.rejected + failed.rejected;
        claimed?;
        Ok(stats)
    }
}

/// A claimed job waiting for a handler slot, with the signal that stops its work.
type Started<T> = (T, Claim, CancellationToken);

/// Claims a batch and records its jobs as outstanding, so their claims are
/// extended from the moment they are held.
async fn claim_batch<T: Entity>(
    queue: &JobQueue<T>,
    config: &JobWorkerConfig,
    outstanding: &Outstanding,
) -> Result<Vec<Started<T>>> {
    let batch = queue
        .claim(&config.owner, config.batch_size.get(), config.claim_ttl)
        .await?;
    let mut out = locked(outstanding);
    Ok(batch
        .jobs
        .into_iter()
        .map(|job| {
            let claim = Claim {
                key: job.key(),
                token: batch.token.clone(),
            };
            let lost = CancellationToken::new();
            out.insert(claim.clone(), lost.clone());
            (job, claim, lost)
        })
        .collect())
}

/// The claimer: takes a batch, starts claiming the next one, and hands the
/// jobs to handlers as concurrency allows, so handlers do not sit idle while a
/// claim is in flight. Returns after every handler it started ended and the
/// batch claimed ahead, if any, is back in the queue.
async fn claim_loop<T, H, Fut>(
    queue: &JobQueue<T>,
    config: &JobWorkerConfig,
    handler: &Arc<H>,
    outstanding: &Outstanding,
    ack_tx: &mpsc::UnboundedSender<(Claim, bool)>,
    stop: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<()>
where
    T: Entity,
    H: Fn(ClaimedJob<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), JobError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.concurrency.get()));
    let mut running = JoinSet::new();
    // At most one claim runs ahead; a set, so it is aborted if the run is dropped.
    let mut ahead: JoinSet<Result<Vec<Started<T>>>> = JoinSet::new();
    let claim_ahead = |ahead: &mut JoinSet<Result<Vec<Started<T>>>>| {
        let (queue, config, outstanding) = (queue.clone(), config.clone(), Arc::clone(outstanding));
        ahead.spawn(async move { claim_batch(&queue, &config, &outstanding).await });
    };
    let mut last_requeue: Option<tokio::time::Instant> = None;
    let result = async {
        while !stop.is_cancelled() {
            if let Some(every) = config.requeue_every {
                if last_requeue.is_none_or(|at| at.elapsed() >= every) {
                    stats.requeued += queue.requeue_expired().await?;
                    last_requeue = Some(tokio::time::Instant::now());
                }
            }
            let jobs = match ahead.join_next().await {
                Some(joined) => joined.map_err(|e| claim_task_failed(config, e))??,
                None => claim_batch(queue, config, outstanding).await?,
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(config.idle_poll) => {}
                }
                continue;
            }
            stats.claimed += jobs.len() as u64;
            if !stop.is_cancelled() {
                claim_ahead(&mut ahead);
            }
            let mut pending = jobs.into_iter();
            while let Some((job, claim, lost)) = pending.next() {
                // A stop wins over a slot that frees at the same moment, so no
                // job starts after the worker was told to stop.
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        // A claim still running ahead could take the jobs put
                        // back here; settle it first.
                        settle_ahead(&mut ahead, queue, config, outstanding, stats).await?;
                        let rest: Vec<Claim> = std::iter::once(claim)
                            .chain(pending.map(|(_, c, _)| c))
                            .collect();
                        stats.released += release(queue, outstanding, &rest).await?.acked;
                        break;
                    }
                    permit = Arc::clone(&slots).acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break };
                let (handler, ack_tx) = (Arc::clone(handler), ack_tx.clone());
                running.spawn(async move {
                    let work = handler(ClaimedJob {
                        job,
                        claim: claim.clone(),
                        claim_lost: lost.clone(),
                    });
                    let ok = tokio::select! {
                        out = work => out.is_ok(),
                        // The outcome would be rejected; stop the work now.
                        _ = lost.cancelled() => false,
                    };
                    let _ = ack_tx.send((claim, ok));
                    drop(permit);
                });
                // Reap finished handlers so the set stays small.
                while running.try_join_next().is_some() {}
            }
        }
        Ok(())
    }
    .await;
    // The batch claimed ahead was never started: it goes back to the queue.
    let returned = settle_ahead(&mut ahead, queue, config, outstanding, stats).await;
    while let Some(joined) = running.join_next().await {
        if let Err(e) = joined {
            tracing::warn!(error = %e, "job handler panicked or was cancelled");
        }
    }
    result?;
    returned
}

/// Waits for the claim running ahead, if any, and puts the jobs it took back in
/// the queue: they were never started.
async fn settle_ahead<T: Entity>(
    ahead: &mut JoinSet<Result<Vec<Started<T>>>>,
    queue: &JobQueue<T>,
    config: &JobWorkerConfig,
    outstanding: &Outstanding,
    stats: &mut WorkerStats,
) -> Result<()> {
    match ahead.join_next().await {
        Some(Ok(Ok(jobs))) if !jobs.is_empty() => {
            stats.claimed += jobs.len() as u64;
            let rest: Vec<Claim> = jobs.into_iter().map(|(_, c, _)| c).collect();
            stats.released += release(queue, outstanding, &rest).await?.acked;
            Ok(())
        }
        Some(Ok(Err(e))) => {
            tracing::warn!(owner = %config.owner, error = %e, "claiming ahead failed");
            Ok(())
        }
        Some(Err(e)) => Err(claim_task_failed(config, e)),
        _ => Ok(()),
    }
}

fn claim_task_failed(config: &JobWorkerConfig, e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend {
        message: format!(
            "job worker `{}`: the task claiming ahead failed",
            config.owner
        ),
        source: Some(Box::new(e)),
    }
}

async fn release<T: Entity>(
    queue: &JobQueue<T>,
    outstanding: &Outstanding,
    claims: &[Claim],
) -> Result<AckCount> {
    {
        let mut out = locked(outstanding);
        for c in claims {
            out.remove(c);
        }
    }
    queue.release(claims).await
}

/// The acknowledger: buffers outcomes and writes them in batches.
async fn acknowledge<T: Entity>(
    queue: JobQueue<T>,
    config: JobWorkerConfig,
    outstanding: Outstanding,
    mut outcomes: mpsc::UnboundedReceiver<(Claim, bool)>,
) -> Result<(AckCount, AckCount)> {
    let (mut succeeded, mut failed) = (AckCount::default(), AckCount::default());
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let limit = config.ack_batch.get();
    let mut open = true;
    while open {
        // Wait for a first outcome, then gather more until the batch is full or
        // the interval has passed.
        match outcomes.recv().await {
            Some((claim, true)) => ok.push(claim),
            Some((claim, false)) => bad.push(claim),
            None => open = false,
        }
        let deadline = tokio::time::Instant::now() + config.ack_interval;
        while open && ok.len() + bad.len() < limit {
            let next = match outcomes.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, outcomes.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Some((claim, true)) => ok.push(claim),
                Some((claim, false)) => bad.push(claim),
                None => open = false,
            }
        }
        {
            let mut out = locked(&outstanding);
            for c in ok.iter().chain(&bad) {
                out.remove(c);
            }
        }
        succeeded.add(queue.ack(&ok).await?);
        failed.add(queue.nack(&bad).await?);
        ok.clear();
        bad.clear();
    }
    Ok((succeeded, failed))
}

/// The extender: every third of the claim TTL, extends the claims of jobs not
/// yet acknowledged and stops the work of those that were lost.
async fn extend_claims<T: Entity>(
    queue: JobQueue<T>,
    config: JobWorkerConfig,
    outstanding: Outstanding,
    done: CancellationToken,
) {
    let every = (config.claim_ttl / 3).max(Duration::from_millis(1));
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let claims: Vec<Claim> = locked(&outstanding).keys().cloned().collect();
        match queue.extend(&claims, config.claim_ttl).await {
            Ok(lost) => {
                let out = locked(&outstanding);
                for c in &lost {
                    if let Some(token) = out.get(c) {
                        token.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(owner = %config.owner, error = %e, "extending job claims"),
        }
    }
}

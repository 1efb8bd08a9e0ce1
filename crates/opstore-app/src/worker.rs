//! A job-queue worker over any collection: claims due jobs in batches, runs a
//! handler on them with bounded concurrency, and acknowledges in batches, with
//! every write fenced by the claim it was made under.
//!
//! The job entity is the caller's; [`QueueFields`] names the four fields the
//! queue manages:
//!
//! - `due_at` (timestamp, indexed, optional): set while the job waits, absent
//!   once it is claimed or finished. Claims take jobs whose `due_at` has come,
//!   oldest first, so finished jobs never slow a claim down however many pile up.
//! - `claimed_by` (string, optional): the worker holding the claim.
//! - `claim_token` (string, optional): a fresh random token per claim. An
//!   acknowledgement only applies to jobs still carrying the token it was
//!   claimed with, so a worker whose claim expired and was taken over cannot
//!   finish a job another worker now holds.
//! - `claimed_until` (timestamp, indexed, optional): when the claim lapses
//!   unless extended; [`JobQueue::requeue_expired`] puts lapsed jobs back.
//!
//! [`JobQueue`] holds the primitives (one claim, one batched acknowledgement);
//! [`JobWorker`] runs them the way a service does: one batch prefetched while
//! the previous one runs, acknowledgements flushed in batches, claims of
//! running jobs extended, lapsed claims requeued.
//!
//! Claim times are compared with the worker's clock, so workers sharing a queue
//! need clocks that agree to well within the claim TTL.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_domain::{
    Clock, Entity, Filter, Query, Repository, Result, StoreError, SystemClock, Timestamp, Update,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The paths of the fields a [`JobQueue`] manages on the job entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFields {
    /// Timestamp, indexed, optional: when a waiting job becomes claimable.
    pub due_at: String,
    /// String, optional: the claiming worker.
    pub claimed_by: String,
    /// String, optional: the token of the current claim.
    pub claim_token: String,
    /// Timestamp, indexed, optional: when the current claim lapses.
    pub claimed_until: String,
}

impl QueueFields {
    /// The conventional names: `due_at`, `claimed_by`, `claim_token`, `claimed_until`.
    pub fn standard() -> Self {
        QueueFields {
            due_at: "due_at".into(),
            claimed_by: "claimed_by".into(),
            claim_token: "claim_token".into(),
            claimed_until: "claimed_until".into(),
        }
    }
}

/// What finishing a job does to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Applies the update (e.g. `status = done`) and keeps the job.
    Update(Update),
    /// Deletes the job.
    Delete,
}

/// What a failed job becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    /// Applied to the job (e.g. `status = failed`, an error counter).
    pub update: Update,
    /// When set, the job waits this long and is claimable again; otherwise it
    /// leaves the queue.
    pub retry_after: Option<Duration>,
}

/// The queue's writes besides the managed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueUpdates {
    /// Applied on claim (e.g. `status = running`, an attempt counter).
    pub on_claim: Update,
    /// Applied on success.
    pub on_success: Completion,
    /// Applied on failure.
    pub on_failure: FailurePolicy,
    /// Applied when a claimed job goes back to the queue unfinished (its claim
    /// lapsed, or its worker stopped before starting it), e.g. `status = pending`.
    pub on_requeue: Update,
}

/// The claim a job was taken under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The job's key.
    pub key: String,
    /// The claim's token.
    pub token: String,
}

/// Jobs taken by one claim.
#[derive(Debug, Clone)]
pub struct ClaimedBatch<T> {
    /// The claim's token, on every job of the batch.
    pub token: String,
    /// The jobs after the claim, in claim order.
    pub jobs: Vec<T>,
}

/// Outcome of a batched acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckCount {
    /// Jobs that still carried their claim and were finished.
    pub acked: u64,
    /// Jobs whose claim had lapsed and been taken over or requeued: untouched.
    pub rejected: u64,
}

impl AckCount {
    fn add(&mut self, other: AckCount) {
        self.acked += other.acked;
        self.rejected += other.rejected;
    }
}

/// The queue primitives over one job collection.
///
/// A claim that lapses is requeued and may be taken by another worker; the first
/// worker's acknowledgement then carries a stale claim token and is rejected:
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
/// use std::sync::Arc;
/// use std::time::Duration;
/// use opstore_app::worker::{Claim, JobQueue, QueueFields};
/// use opstore_app::{DataStore, StoreConfig};
/// use opstore_domain::{Clock, ManualClock, Repository};
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
/// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
/// let drains = Arc::new(store.repository::<Drain>()?);
/// // `updates()` sets `status` on claim, success, failure and requeue.
/// let queue = JobQueue::new(drains.clone(), QueueFields::standard(), updates())?
///     .with_clock(Arc::new(clock.clone()));
/// drains.insert(&drain("node-7", clock.now())).await?;
///
/// let ttl = Duration::from_secs(60);
/// let first = queue.claim("worker-a", 10, ttl).await?;
/// assert_eq!(first.jobs.len(), 1);
/// let stale = Claim { key: "node-7".into(), token: first.token.clone() };
///
/// // worker-a stalls past its claim; the job is requeued and worker-b takes it.
/// clock.advance(Duration::from_secs(61));
/// assert_eq!(queue.requeue_expired().await?, 1);
/// let second = queue.claim("worker-b", 10, ttl).await?;
/// assert_eq!(second.jobs[0].claimed_by.as_deref(), Some("worker-b"));
///
/// // worker-a's late acknowledgement is rejected; worker-b's applies.
/// assert_eq!(queue.ack(&[stale]).await?.rejected, 1);
/// let held = Claim { key: "node-7".into(), token: second.token };
/// assert_eq!(queue.ack(&[held]).await?.acked, 1);
/// assert_eq!(drains.get("node-7").await?.map(|d| d.status).as_deref(), Some("done"));
/// # Ok(()) }
/// ```
pub struct JobQueue<T: Entity> {
    jobs: Arc<dyn Repository<T>>,
    fields: QueueFields,
    updates: QueueUpdates,
    clock: Arc<dyn Clock>,
}

impl<T: Entity> Clone for JobQueue<T> {
    fn clone(&self) -> Self {
        JobQueue {
            jobs: Arc::clone(&self.jobs),
            fields: self.fields.clone(),
            updates: self.updates.clone(),
            clock: Arc::clone(&self.clock),
        }
    }
}

impl<T: Entity> fmt::Debug for JobQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("collection", &T::schema().name())
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl<T: Entity> JobQueue<T> {
    /// The queue over `jobs`, on the system clock. `Validation` error when a
    /// managed field is missing from the schema or has the wrong type, or when
    /// `due_at` or `claimed_until` is not indexed.
    pub fn new(
        jobs: Arc<dyn Repository<T>>,
        fields: QueueFields,
        updates: QueueUpdates,
    ) -> Result<Self> {
        let schema = T::schema();
        let check = |path: &str, ty: opstore_domain::FieldType, indexed: bool| {
            let field = schema.field(path).filter(|f| f.ty() == ty);
            match field {
                Some(f) if !indexed || f.is_indexed() => Ok(()),
                _ => Err(StoreError::Validation(format!(
                    "job queue on `{}`: field `{path}` must be a{} {ty:?} field",
                    schema.name(),
                    if indexed { "n indexed" } else { "" }
                ))),
            }
        };
        use opstore_domain::FieldType as F;
        check(&fields.due_at, F::Timestamp, true)?;
        check(&fields.claimed_until, F::Timestamp, true)?;
        check(&fields.claimed_by, F::String, false)?;
        check(&fields.claim_token, F::String, false)?;
        Ok(JobQueue {
            jobs,
            fields,
            updates,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same queue on another clock (tests use a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Takes up to `limit` due jobs, oldest `due_at` first, for `owner` for `ttl`,
    /// under one fresh claim token. Concurrent claimers never take the same job.
    pub async fn claim(&self, owner: &str, limit: usize, ttl: Duration) -> Result<ClaimedBatch<T>> {
        let now = self.now();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let f = &self.fields;
        let query = Query::filter(Filter::lte(&f.due_at, now))
            .sort_asc(&f.due_at)
            .limit(u64::try_from(limit).unwrap_or(u64::MAX));
        let update = self
            .updates
            .on_claim
            .clone()
            .unset(&f.due_at)
            .set(&f.claimed_by, owner)
            .set(&f.claim_token, token.as_str())
            .set(&f.claimed_until, now.add(ttl));
        let jobs = self.jobs.claim(&query, &update).await?;
        Ok(ClaimedBatch { token, jobs })
    }

    /// Jobs among `claims` still held under their claim.
    fn held(&self, claims: &[Claim]) -> Filter {
        let mut by_token: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in claims {
            by_token.entry(&c.token).or_default().push(&c.key);
        }
        let key = T::schema().key();
        Filter::any_of(by_token.into_iter().map(|(token, keys)| {
            Filter::is_in(key, keys).and(Filter::eq(&self.fields.claim_token, token))
        }))
    }

    fn counted(submitted: usize, matched: u64) -> AckCount {
        let submitted = u64::try_from(submitted).unwrap_or(u64::MAX);
        AckCount {
            acked: matched.min(submitted),
            rejected: submitted.saturating_sub(matched),
        }
    }

    /// Finishes successful jobs in one write; jobs no longer under the claim
    /// given for them are left alone and counted as rejected.
    pub async fn ack(&self, claims: &[Claim]) -> Result<AckCount> {
        if claims.is_empty() {
            return Ok(AckCount::default());
        }
        let held = self.held(claims);
        let matched = match &self.updates.on_success {
            Completion::Delete => self.jobs.delete_many(&held).await?,
            Completion::Update(update) => {
                let update = update.clone().unset(&self.fields.claimed_until);
                self.jobs.update_many(&held, &update).await?.matched
            }
        };
        Ok(Self::counted(claims.len(), matched))
    }

    /// Records failed jobs in one write, fenced like [`ack`](Self::ack).
    pub async fn nack(&self, claims: &[Claim]) -> Result<AckCount> {
        if claims.is_empty() {
            return Ok(AckCount::default());
        }
        let policy = &self.updates.on_failure;
        let update = policy.update.clone().unset(&self.fields.claimed_until);
        let update = match policy.retry_after {
            Some(after) => update.set(&self.fields.due_at, self.now().add(after)),
            None => update,
        };
        let matched = self
            .jobs
            .update_many(&self.held(claims), &update)
            .await?
            .matched;
        Ok(Self::counted(claims.len(), matched))
    }

    /// Puts claimed jobs back in the queue, due now (a worker stopping with
    /// jobs it has not started). Fenced like [`ack`](Self::ack).
    pub async fn release(&self, claims: &[Claim]) -> Result<AckCount> {
        if claims.is_empty() {
            return Ok(AckCount::default());
        }
        let matched = self
            .jobs
            .update_many(&self.held(claims), &self.requeued(self.now()))
            .await?
            .matched;
        Ok(Self::counted(claims.len(), matched))
    }

    /// The update that puts a claimed job back in the queue, due at `now`.
    fn requeued(&self, now: Timestamp) -> Update {
        let f = &self.fields;
        self.updates
            .on_requeue
            .clone()
            .set(&f.due_at, now)
            .unset(&f.claimed_until)
            .unset(&f.claimed_by)
            .unset(&f.claim_token)
    }

    /// Extends the claims still held to `ttl` from now; returns the claims that
    /// were lost.
    pub async fn extend(&self, claims: &[Claim], ttl: Duration) -> Result<Vec<Claim>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let update = Update::new().set(&self.fields.claimed_until, self.now().add(ttl));
        let count = self.jobs.update_many(&self.held(claims), &update).await?;
        if count.matched >= u64::try_from(claims.len()).unwrap_or(u64::MAX) {
            return Ok(Vec::new());
        }
        // Some were lost: find out which, to stop only their work.
        let key = T::schema().key();
        let still: Vec<T> = self.jobs.find(&Query::filter(self.held(claims))).await?;
        let kept: std::collections::HashSet<String> = still.iter().map(Entity::key).collect();
        Ok(claims
            .iter()
            .filter(|c| !kept.contains(&c.key))
            .inspect(|c| tracing::debug!(collection = T::schema().name(), %key, job = %c.key, "claim lost"))
            .cloned()
            .collect())
    }

    /// Puts every job whose claim lapsed back in the queue, due now; returns how
    /// many. Their old claims can no longer be acknowledged.
    pub async fn requeue_expired(&self) -> Result<u64> {
        let now = self.now();
        let count = self
            .jobs
            .update_many(
                &Filter::lt(&self.fields.claimed_until, now),
                &self.requeued(now),
            )
            .await?;
        Ok(count.modified)
    }
}

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

/// The claimer: takes a batch, hands its jobs to handlers as concurrency
/// allows, then takes the next. Returns after every handler it started ended.
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
    let mut last_requeue: Option<tokio::time::Instant> = None;
    let result = async {
        while !stop.is_cancelled() {
            if let Some(every) = config.requeue_every {
                if last_requeue.is_none_or(|at| at.elapsed() >= every) {
                    stats.requeued += queue.requeue_expired().await?;
                    last_requeue = Some(tokio::time::Instant::now());
                }
            }
            let batch = queue
                .claim(&config.owner, config.batch_size.get(), config.claim_ttl)
                .await?;
            if batch.jobs.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(config.idle_poll) => {}
                }
                continue;
            }
            stats.claimed += batch.jobs.len() as u64;
            let mut jobs = Vec::with_capacity(batch.jobs.len());
            {
                let mut out = locked(outstanding);
                for job in batch.jobs {
                    let claim = Claim {
                        key: job.key(),
                        token: batch.token.clone(),
                    };
                    let lost = CancellationToken::new();
                    out.insert(claim.clone(), lost.clone());
                    jobs.push((job, claim, lost));
                }
            }
            let mut pending = jobs.into_iter();
            while let Some((job, claim, lost)) = pending.next() {
                // A stop wins over a slot that frees at the same moment, so no
                // job starts after the worker was told to stop.
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
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
    while let Some(joined) = running.join_next().await {
        if let Err(e) = joined {
            tracing::warn!(error = %e, "job handler panicked or was cancelled");
        }
    }
    result
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

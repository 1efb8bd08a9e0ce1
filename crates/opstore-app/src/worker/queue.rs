//! The queue primitives: one claim of due jobs, one batched acknowledgement,
//! claim extension and requeueing of lapsed claims, each fenced by the claim token.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opstore_domain::{
    Clock, Entity, Filter, Query, Repository, Result, StoreError, SystemClock, Timestamp, Update,
};

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
    pub(super) fn add(&mut self, other: AckCount) {
        self.acked += other.acked;
        self.rejected += other.rejected;
    }
}

/// The queue primitives over one job collection.
///
/// Declare the job collection's schema `without_change_feed` unless something
/// watches it: on PostgreSQL and SQLite every claim and acknowledgement then
/// writes its rows and no changelog rows.
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

    /// Jobs among `claims` still held under their claim: carrying its token and
    /// not yet finished (finishing a job ends its claim by removing
    /// `claimed_until`, so a second acknowledgement of the same claim is
    /// rejected, and adapters know every held job changes).
    fn held(&self, claims: &[Claim]) -> Filter {
        let mut by_token: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in claims {
            by_token.entry(&c.token).or_default().push(&c.key);
        }
        let key = T::schema().key();
        Filter::any_of(by_token.into_iter().map(|(token, keys)| {
            Filter::is_in(key, keys).and(Filter::eq(&self.fields.claim_token, token))
        }))
        .and(Filter::exists(&self.fields.claimed_until))
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

//! The claim-based job queue and worker, on every backend.

#[macro_use]
mod services_support;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use opstore_app::worker::{
    Claim, Completion, FailurePolicy, JobError, JobQueue, JobWorker, JobWorkerConfig, QueueFields,
    QueueUpdates,
};
use opstore_domain::{
    Entity, Field, FieldType, Filter, ManualClock, Query, Repository, Schema, Store, StoreExt,
    Timestamp, Update,
};
use serde::{Deserialize, Serialize};
use services_support::t0;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

on_every_backend!(
    claims_take_due_jobs_oldest_first_and_never_twice,
    a_lapsed_claim_cannot_be_acknowledged_after_takeover,
    a_worker_runs_every_job_once_and_records_failures,
    a_lost_claim_stops_the_handler_and_its_outcome_is_rejected,
    a_stopping_worker_puts_unstarted_jobs_back,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct QueueJob {
    id: String,
    status: String,
    attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_until: Option<Timestamp>,
}

static QUEUE_JOB: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("test_queue_jobs", "id")
        .field(Field::new("status", FieldType::String).indexed())
        .field(Field::new("attempts", FieldType::Int))
        .field(
            Field::new("due_at", FieldType::Timestamp)
                .indexed()
                .optional(),
        )
        .field(Field::new("claimed_by", FieldType::String).optional())
        .field(Field::new("claim_token", FieldType::String).optional())
        .field(
            Field::new("claimed_until", FieldType::Timestamp)
                .indexed()
                .optional(),
        )
        .build()
});

impl Entity for QueueJob {
    fn schema() -> &'static Schema {
        &QUEUE_JOB
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

fn job(i: u32, due: Timestamp) -> QueueJob {
    QueueJob {
        id: format!("j{i:05}"),
        status: "pending".into(),
        attempts: 0,
        due_at: Some(due),
        claimed_by: None,
        claim_token: None,
        claimed_until: None,
    }
}

fn updates(retry_after: Option<Duration>) -> QueueUpdates {
    QueueUpdates {
        on_claim: Update::new().set("status", "running").inc("attempts", 1),
        on_success: Completion::Update(Update::new().set("status", "done")),
        on_failure: FailurePolicy {
            update: Update::new().set("status", "failed"),
            retry_after,
        },
        on_requeue: Update::new().set("status", "pending"),
    }
}

struct Fixture {
    repo: Arc<dyn Repository<QueueJob>>,
    clock: ManualClock,
}

impl Fixture {
    async fn new(store: Arc<dyn Store>, jobs: u32) -> Self {
        store.migrate(&[QueueJob::schema()]).await.unwrap();
        let repo: Arc<dyn Repository<QueueJob>> = Arc::new(store.repository::<QueueJob>().unwrap());
        let docs: Vec<QueueJob> = (0..jobs)
            .map(|i| job(i, t0().add(Duration::from_millis(u64::from(i)))))
            .collect();
        if !docs.is_empty() {
            repo.insert_many(&docs).await.unwrap();
        }
        let clock = ManualClock::new(t0());
        clock.advance(Duration::from_secs(60));
        Fixture { repo, clock }
    }

    fn queue(&self, retry_after: Option<Duration>) -> JobQueue<QueueJob> {
        JobQueue::new(
            Arc::clone(&self.repo),
            QueueFields::standard(),
            updates(retry_after),
        )
        .unwrap()
        .with_clock(Arc::new(self.clock.clone()))
    }

    async fn with_status(&self, status: &str) -> Vec<QueueJob> {
        self.repo
            .find(&Query::filter(Filter::eq("status", status)))
            .await
            .unwrap()
    }
}

fn claims(token: &str, jobs: &[QueueJob]) -> Vec<Claim> {
    jobs.iter()
        .map(|j| Claim {
            key: j.id.clone(),
            token: token.to_owned(),
        })
        .collect()
}

fn worker_config(owner: &str) -> JobWorkerConfig {
    JobWorkerConfig {
        owner: owner.into(),
        batch_size: NonZeroUsize::new(8).unwrap(),
        concurrency: NonZeroUsize::new(3).unwrap(),
        ack_batch: NonZeroUsize::new(5).unwrap(),
        ack_interval: Duration::from_millis(5),
        claim_ttl: Duration::from_secs(3600),
        idle_poll: Duration::from_millis(10),
        requeue_every: None,
    }
}

async fn claims_take_due_jobs_oldest_first_and_never_twice(store: Arc<dyn Store>) {
    let fx = Fixture::new(store, 5).await;
    let future = QueueJob {
        id: "later".into(),
        ..job(99, t0().add(Duration::from_secs(3600)))
    };
    fx.repo.insert(&future).await.unwrap();
    let queue = fx.queue(None);
    let ttl = Duration::from_secs(30);
    let first = queue.claim("w1", 2, ttl).await.unwrap();
    let ids: Vec<_> = first.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["j00000", "j00001"]);
    for j in &first.jobs {
        assert_eq!(j.status, "running");
        assert_eq!(j.attempts, 1);
        assert_eq!(j.due_at, None);
        assert_eq!(j.claimed_by.as_deref(), Some("w1"));
        assert_eq!(j.claim_token.as_deref(), Some(first.token.as_str()));
        assert_eq!(j.claimed_until, Some(fx.clock_now().add(ttl)));
    }
    let second = queue.claim("w2", 10, ttl).await.unwrap();
    let ids: Vec<_> = second.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["j00002", "j00003", "j00004"], "not due yet: `later`");
    assert_ne!(first.token, second.token);
    assert!(queue.claim("w3", 10, ttl).await.unwrap().jobs.is_empty());

    let acked = queue.ack(&claims(&first.token, &first.jobs)).await.unwrap();
    assert_eq!((acked.acked, acked.rejected), (2, 0));
    let done = fx.with_status("done").await;
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|j| j.claimed_until.is_none()));

    // Finishing ended the claim: a repeated outcome for it is rejected.
    let again = queue.ack(&claims(&first.token, &first.jobs)).await.unwrap();
    assert_eq!((again.acked, again.rejected), (0, 2));
    let again = queue
        .nack(&claims(&first.token, &first.jobs))
        .await
        .unwrap();
    assert_eq!((again.acked, again.rejected), (0, 2));
    assert_eq!(fx.with_status("done").await.len(), 2);
    let failed = queue
        .nack(&claims(&second.token, &second.jobs[..1]))
        .await
        .unwrap();
    assert_eq!((failed.acked, failed.rejected), (1, 0));
    let late = queue
        .ack(&claims(&second.token, &second.jobs[..1]))
        .await
        .unwrap();
    assert_eq!(
        (late.acked, late.rejected),
        (0, 1),
        "acknowledged after it failed"
    );
}

impl Fixture {
    fn clock_now(&self) -> Timestamp {
        use opstore_domain::Clock;
        self.clock.now()
    }
}

async fn a_lapsed_claim_cannot_be_acknowledged_after_takeover(store: Arc<dyn Store>) {
    let fx = Fixture::new(store, 1).await;
    let queue = fx.queue(None);
    let ttl = Duration::from_secs(30);
    let stale = queue.claim("w1", 1, ttl).await.unwrap();
    assert_eq!(queue.requeue_expired().await.unwrap(), 0, "claim is live");
    fx.clock.advance(ttl + Duration::from_secs(1));
    assert_eq!(queue.requeue_expired().await.unwrap(), 1);
    let fresh = queue.claim("w2", 1, ttl).await.unwrap();
    assert_eq!(fresh.jobs.len(), 1);
    assert_eq!(fresh.jobs[0].attempts, 2);

    let rejected = queue.ack(&claims(&stale.token, &stale.jobs)).await.unwrap();
    assert_eq!((rejected.acked, rejected.rejected), (0, 1));
    let rejected = queue
        .nack(&claims(&stale.token, &stale.jobs))
        .await
        .unwrap();
    assert_eq!((rejected.acked, rejected.rejected), (0, 1));
    let lost = queue
        .extend(&claims(&stale.token, &stale.jobs), ttl)
        .await
        .unwrap();
    assert_eq!(lost, claims(&stale.token, &stale.jobs));
    assert_eq!(fx.with_status("running").await.len(), 1);

    let acked = queue.ack(&claims(&fresh.token, &fresh.jobs)).await.unwrap();
    assert_eq!((acked.acked, acked.rejected), (1, 0));
    let done = fx.with_status("done").await;
    assert_eq!(done[0].claimed_by.as_deref(), Some("w2"));
}

async fn a_worker_runs_every_job_once_and_records_failures(store: Arc<dyn Store>) {
    let total = 60;
    let fx = Fixture::new(store, total).await;
    let queue = fx.queue(None);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let worker = JobWorker::new(queue, worker_config("w1")).unwrap();
    let handler = {
        let (runs, seen, stop) = (Arc::clone(&runs), Arc::clone(&seen), stop.clone());
        move |claimed: opstore_app::worker::ClaimedJob<QueueJob>| {
            let (runs, seen, stop) = (Arc::clone(&runs), Arc::clone(&seen), stop.clone());
            async move {
                *runs
                    .lock()
                    .unwrap()
                    .entry(claimed.job.id.clone())
                    .or_default() += 1;
                if seen.fetch_add(1, Ordering::SeqCst) + 1 == u64::from(total) {
                    stop.cancel();
                }
                if claimed.job.id.ends_with('7') {
                    return Err(JobError("boom".into()));
                }
                Ok(())
            }
        }
    };
    let stats = worker.run(handler, stop).await.unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), total as usize);
    assert!(runs.values().all(|n| *n == 1), "every job ran once");
    assert_eq!(stats.claimed, u64::from(total));
    assert_eq!((stats.succeeded, stats.failed, stats.rejected), (54, 6, 0));
    assert_eq!(fx.with_status("done").await.len(), 54);
    let failed = fx.with_status("failed").await;
    assert_eq!(failed.len(), 6);
    assert!(
        failed
            .iter()
            .all(|j| j.due_at.is_none() && j.id.ends_with('7'))
    );
}

async fn a_lost_claim_stops_the_handler_and_its_outcome_is_rejected(store: Arc<dyn Store>) {
    let fx = Fixture::new(store, 1).await;
    let mut config = worker_config("w1");
    // Extensions every 100 ms notice the takeover below.
    config.claim_ttl = Duration::from_millis(300);
    let worker = JobWorker::new(fx.queue(None), config).unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let slot = Arc::new(Mutex::new(Some(started_tx)));
    let handler = move |claimed: opstore_app::worker::ClaimedJob<QueueJob>| {
        let slot = Arc::clone(&slot);
        async move {
            let taken = slot.lock().unwrap().take();
            if let Some(started) = taken {
                started.send(claimed.job.id.clone()).unwrap();
                // Ends only when the worker notices the claim is gone.
                claimed.claim_lost.cancelled().await;
            }
            Ok(())
        }
    };
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(handler, stop.clone()));
    let id = started_rx.await.unwrap();
    // Another worker took the job over.
    fx.repo
        .update_one(&id, &Update::new().set("claim_token", "someone-else"))
        .await
        .unwrap();
    stop.cancel();
    let stats = run.await.unwrap().unwrap();
    assert_eq!((stats.succeeded, stats.rejected), (0, 1));
    let job = fx.repo.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status, "running", "the new holder's job is untouched");
    assert_eq!(job.claim_token.as_deref(), Some("someone-else"));
}

async fn a_stopping_worker_puts_unstarted_jobs_back(store: Arc<dyn Store>) {
    let fx = Fixture::new(store, 8).await;
    let mut config = worker_config("w1");
    config.concurrency = NonZeroUsize::MIN;
    let worker = JobWorker::new(fx.queue(None), config).unwrap();
    let stop = CancellationToken::new();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let slots = Arc::new(Mutex::new(Some((started_tx, go_rx))));
    let handler = move |_claimed: opstore_app::worker::ClaimedJob<QueueJob>| {
        let slots = Arc::clone(&slots);
        async move {
            let taken = slots.lock().unwrap().take();
            if let Some((started, go)) = taken {
                started.send(()).unwrap();
                go.await.unwrap();
            }
            Ok(())
        }
    };
    let run = tokio::spawn(worker.run(handler, stop.clone()));
    started_rx.await.unwrap();
    stop.cancel();
    go_tx.send(()).unwrap();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.claimed, 8);
    assert_eq!(stats.succeeded, 1, "the running job finished");
    assert_eq!(stats.released, 7);
    let waiting = fx
        .repo
        .find(&Query::filter(Filter::exists("due_at")))
        .await
        .unwrap();
    assert_eq!(waiting.len(), 7);
    assert!(
        waiting
            .iter()
            .all(|j| j.claim_token.is_none() && j.status == "pending")
    );
}

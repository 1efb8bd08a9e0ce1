//! Job claim + complete throughput on PostgreSQL: no-op jobs, concurrency 8, at
//! backlogs of 2,000 and 20,000 jobs, against peers doing the same work on the
//! same server in the same run:
//!
//! - `apalis`: apalis 1.0 with its PostgreSQL backend (`apalis-postgres`),
//!   batches of 100, concurrency 8;
//! - `hand-written single` / `hand-written batch 50`: a plain sqlx
//!   `FOR UPDATE SKIP LOCKED` claim of 1 or 50 jobs on a table with a partial
//!   index on pending jobs, then an update to `done` fenced by the claimer;
//! - `hand-written documents single` / `... batch 50` (references, no goal):
//!   the same claim by hand on a table laid out like opstore's (a `jsonb`
//!   document plus indexed `due_at` and `claimed_until` columns), rewriting the
//!   document with owner, token and expiry and returning it decoded, then an
//!   acknowledgement fenced by the token;
//! - `opstore single` / `opstore batch 50`: [`JobQueue::claim`] of 1 or 50 jobs
//!   then one fenced [`JobQueue::ack`], from 8 tasks;
//! - `opstore worker`: [`JobWorker`] as users run it (concurrency 8, batches
//!   of 100 prefetched, acknowledgements in batches of up to 100).
//!
//! Each run gets fresh tables in its own schema. `OPSTORE_BENCH_BACKLOGS`
//! overrides the backlogs (comma-separated). Each ratio is printed for people
//! and as a `BENCH` line.
//!
//! ```text
//! OPSTORE_POSTGRES_URL=postgres://... cargo bench -p opstore-app --features postgres --bench jobs
//! ```

// The PostgreSQL runs nest deep async state machines.
#![recursion_limit = "256"]

#[cfg(not(feature = "postgres"))]
fn main() {
    println!("SKIP jobs/postgres: built without the `postgres` feature of opstore-app");
}

#[cfg(feature = "postgres")]
fn main() {
    let Ok(url) = std::env::var("OPSTORE_POSTGRES_URL") else {
        println!("SKIP jobs/postgres: OPSTORE_POSTGRES_URL is not set");
        return;
    };
    let backlogs: Vec<u64> = std::env::var("OPSTORE_BENCH_BACKLOGS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2_000, 20_000]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(pg::run(&url, &backlogs)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "postgres")]
mod peers;

#[cfg(feature = "postgres")]
mod pg {
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, LazyLock};
    use std::time::{Duration, Instant};

    use opstore_app::worker::{
        Claim, ClaimedJob, Completion, FailurePolicy, JobQueue, JobWorker, JobWorkerConfig,
        QueueFields, QueueUpdates,
    };
    use opstore_domain::{
        Entity, Field, FieldType, Filter, Repository, Schema, Store, StoreExt, Timestamp, Update,
    };
    use opstore_postgres::{PgConfig, PgStore};
    use opstore_testkit::bench::{Better, Figure, Goal};
    use serde::{Deserialize, Serialize};
    use sqlx::postgres::PgPoolOptions;
    use tokio_util::sync::CancellationToken;

    pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    pub(crate) const CONCURRENCY: usize = 8;
    pub(crate) const POOL: u32 = 16;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct BenchJob {
        pub(crate) id: String,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_at: Option<Timestamp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claimed_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claimed_until: Option<Timestamp>,
    }

    static BENCH_JOB: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("bench_jobs", "id")
            .field(Field::new("status", FieldType::String))
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
            // Nobody watches a job queue; its claims and acknowledgements stay
            // out of the changelog.
            .without_change_feed()
            .build()
    });

    impl Entity for BenchJob {
        fn schema() -> &'static Schema {
            &BENCH_JOB
        }
        fn key(&self) -> String {
            self.id.clone()
        }
    }

    pub(crate) fn rate(jobs: u64, elapsed: Duration) -> f64 {
        jobs as f64 / elapsed.as_secs_f64().max(1e-9)
    }

    fn report(backlog: u64, peer: &str, jobs_per_s: f64) {
        println!("jobs/postgres/{backlog}/{peer}: {jobs_per_s:.0} jobs/s");
    }

    pub async fn run(url: &str, backlogs: &[u64]) -> BenchResult<()> {
        let admin = PgPoolOptions::new()
            .max_connections(POOL)
            .connect(url)
            .await?;
        for &backlog in backlogs {
            let apalis = crate::peers::apalis_peer(url, &admin, backlog).await?;
            report(backlog, "apalis", apalis);
            let hw_single = crate::peers::hand_written(&admin, backlog, 1).await?;
            report(backlog, "hand-written single", hw_single);
            let ours_single = ours_claims(url, backlog, 1).await?;
            report(backlog, "opstore single", ours_single);
            let hw_batch = crate::peers::hand_written(&admin, backlog, 50).await?;
            report(backlog, "hand-written batch 50", hw_batch);
            let ours_batch = ours_claims(url, backlog, 50).await?;
            report(backlog, "opstore batch 50", ours_batch);
            let hd_single = crate::peers::hand_written_documents(&admin, backlog, 1).await?;
            report(backlog, "hand-written documents single", hd_single);
            let hd_batch = crate::peers::hand_written_documents(&admin, backlog, 50).await?;
            report(backlog, "hand-written documents batch 50", hd_batch);
            let worker = ours_worker(url, backlog).await?;
            report(backlog, "opstore worker", worker);
            let base = |scenario: &str, ours: f64, baseline: &str, theirs: f64| {
                Figure::new(
                    "jobs",
                    &format!("{scenario}, backlog {backlog}"),
                    "jobs/s",
                    ours,
                    baseline,
                    theirs,
                )
            };
            let figure = |scenario: &str, ours: f64, baseline: &str, theirs: f64, bound: f64| {
                base(scenario, ours, baseline, theirs)
                    .goal(Goal::ratio(Better::Higher, bound))
                    .detail(format!("no-op jobs, concurrency {CONCURRENCY}, PostgreSQL"))
            };
            // The same work by hand: what the document layout costs, apart from opstore.
            let reference = |scenario: &str, ours: f64, baseline: &str, theirs: f64| {
                base(scenario, ours, baseline, theirs).detail(format!(
                    "no-op jobs, concurrency {CONCURRENCY}, PostgreSQL; the peer rewrites and \
                     returns the jsonb document as opstore does"
                ))
            };
            opstore_testkit::bench::report(&[
                figure("opstore worker", worker, "apalis-postgres", apalis, 2.0),
                figure(
                    "opstore claim 1",
                    ours_single,
                    "hand-written SKIP LOCKED claim 1",
                    hw_single,
                    0.9,
                ),
                figure(
                    "opstore claim 50",
                    ours_batch,
                    "hand-written SKIP LOCKED claim 50",
                    hw_batch,
                    0.9,
                ),
                reference(
                    "opstore claim 1 (reference)",
                    ours_single,
                    "hand-written claim 1 on a document table",
                    hd_single,
                ),
                reference(
                    "opstore claim 50 (reference)",
                    ours_batch,
                    "hand-written claim 50 on a document table",
                    hd_batch,
                ),
            ]);
        }
        admin.close().await;
        Ok(())
    }

    pub(crate) fn schema_name(peer: &str) -> String {
        format!("bench_{peer}_{}", uuid::Uuid::new_v4().simple())
    }

    /// A migrated store in a fresh schema, with `backlog` due jobs.
    async fn preloaded(url: &str, backlog: u64) -> BenchResult<(PgStore, String)> {
        let schema = schema_name("opstore");
        let mut config = PgConfig::from_url(url);
        config.schema = Some(schema.clone());
        config.max_connections = POOL;
        let store = PgStore::connect(config).await?;
        store.migrate(&[BenchJob::schema()]).await?;
        let repo = store.repository::<BenchJob>()?;
        let base = Timestamp::now().sub(Duration::from_secs(3600));
        let mut next = 0u64;
        while next < backlog {
            let end = (next + 2_000).min(backlog);
            let docs: Vec<BenchJob> = (next..end)
                .map(|i| BenchJob {
                    id: format!("j{i:08}"),
                    status: "pending".into(),
                    // Distinct due times, in enqueue order.
                    due_at: Some(base.add(Duration::from_micros(i))),
                    claimed_by: None,
                    claim_token: None,
                    claimed_until: None,
                })
                .collect();
            repo.insert_many(&docs).await?;
            next = end;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ANALYZE \"{schema}\".bench_jobs"
        )))
        .execute(store.pool())
        .await?;
        Ok((store, schema))
    }

    async fn drop_schema(store: PgStore, schema: &str) -> BenchResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(store.pool())
        .await?;
        store.close().await;
        Ok(())
    }

    fn queue(store: &PgStore) -> BenchResult<JobQueue<BenchJob>> {
        let repo: Arc<dyn Repository<BenchJob>> = Arc::new(store.repository::<BenchJob>()?);
        Ok(JobQueue::new(
            repo,
            QueueFields::standard(),
            QueueUpdates {
                on_claim: Update::new().set("status", "running"),
                on_success: Completion::Update(Update::new().set("status", "done")),
                on_failure: FailurePolicy {
                    update: Update::new().set("status", "failed"),
                    retry_after: None,
                },
                on_requeue: Update::new().set("status", "pending"),
            },
        )?)
    }

    async fn count_done(store: &PgStore) -> BenchResult<u64> {
        Ok(store
            .repository::<BenchJob>()?
            .count(&Filter::eq("status", "done"))
            .await?)
    }

    pub(crate) fn check(peer: &str, done: u64, backlog: u64) -> BenchResult<()> {
        if done != backlog {
            return Err(format!("{peer}: {done} of {backlog} jobs done").into());
        }
        Ok(())
    }

    /// 8 tasks, each claiming `per_claim` jobs and acknowledging them in one write.
    async fn ours_claims(url: &str, backlog: u64, per_claim: usize) -> BenchResult<f64> {
        let (store, schema) = preloaded(url, backlog).await?;
        let queue = queue(&store)?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..CONCURRENCY {
            let queue = queue.clone();
            tasks.spawn(async move {
                let owner = format!("bench-{w}");
                loop {
                    let batch = queue
                        .claim(&owner, per_claim, Duration::from_secs(300))
                        .await?;
                    if batch.jobs.is_empty() {
                        return Ok::<_, opstore_domain::StoreError>(());
                    }
                    let claims: Vec<Claim> = batch
                        .jobs
                        .iter()
                        .map(|j| Claim {
                            key: j.id.clone(),
                            token: batch.token.clone(),
                        })
                        .collect();
                    queue.ack(&claims).await?;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        check("opstore claims", count_done(&store).await?, backlog)?;
        drop_schema(store, &schema).await?;
        Ok(rate(backlog, elapsed))
    }

    async fn ours_worker(url: &str, backlog: u64) -> BenchResult<f64> {
        let (store, schema) = preloaded(url, backlog).await?;
        let config = JobWorkerConfig {
            owner: "bench-worker".into(),
            batch_size: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            concurrency: NonZeroUsize::new(CONCURRENCY).unwrap_or(NonZeroUsize::MIN),
            ack_batch: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            ack_interval: Duration::from_millis(2),
            claim_ttl: Duration::from_secs(300),
            idle_poll: Duration::from_millis(10),
            requeue_every: Some(Duration::from_secs(30)),
        };
        let worker = JobWorker::new(queue(&store)?, config)?;
        let stop = CancellationToken::new();
        let seen = Arc::new(AtomicU64::new(0));
        let handler = {
            let (stop, seen) = (stop.clone(), Arc::clone(&seen));
            move |_job: ClaimedJob<BenchJob>| {
                let (stop, seen) = (stop.clone(), Arc::clone(&seen));
                async move {
                    if seen.fetch_add(1, Ordering::Relaxed) + 1 == backlog {
                        stop.cancel();
                    }
                    Ok(())
                }
            }
        };
        let started = Instant::now();
        let stats = worker.run(handler, stop).await?;
        let elapsed = started.elapsed();
        check("opstore worker", stats.succeeded, backlog)?;
        check("opstore worker", count_done(&store).await?, backlog)?;
        drop_schema(store, &schema).await?;
        Ok(rate(backlog, elapsed))
    }
}

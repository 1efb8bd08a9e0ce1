//! Job claim + complete throughput on PostgreSQL: no-op jobs, concurrency 8, at
//! backlogs of 2,000 and 20,000 jobs, against peers doing the same work on the
//! same server in the same run:
//!
//! - `apalis`: apalis 1.0 with its PostgreSQL backend (`apalis-postgres`),
//!   batches of 100, concurrency 8;
//! - `hand-written single` / `hand-written batch 50`: a plain sqlx
//!   `FOR UPDATE SKIP LOCKED` claim of 1 or 50 jobs on a table with a partial
//!   index on pending jobs, then an update to `done` fenced by the claimer;
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
    use sqlx::postgres::{PgPool, PgPoolOptions};
    use tokio_util::sync::CancellationToken;

    type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    const CONCURRENCY: usize = 8;
    const POOL: u32 = 16;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct BenchJob {
        id: String,
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

    fn rate(jobs: u64, elapsed: Duration) -> f64 {
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
            let apalis = apalis_peer(url, &admin, backlog).await?;
            report(backlog, "apalis", apalis);
            let hw_single = hand_written(&admin, backlog, 1).await?;
            report(backlog, "hand-written single", hw_single);
            let ours_single = ours_claims(url, backlog, 1).await?;
            report(backlog, "opstore single", ours_single);
            let hw_batch = hand_written(&admin, backlog, 50).await?;
            report(backlog, "hand-written batch 50", hw_batch);
            let ours_batch = ours_claims(url, backlog, 50).await?;
            report(backlog, "opstore batch 50", ours_batch);
            let worker = ours_worker(url, backlog).await?;
            report(backlog, "opstore worker", worker);
            let figure = |scenario: &str, ours: f64, baseline: &str, theirs: f64, bound: f64| {
                Figure::new(
                    "jobs",
                    &format!("{scenario}, backlog {backlog}"),
                    "jobs/s",
                    ours,
                    baseline,
                    theirs,
                )
                .goal(Goal::ratio(Better::Higher, bound))
                .detail(format!("no-op jobs, concurrency {CONCURRENCY}, PostgreSQL"))
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
            ]);
        }
        admin.close().await;
        Ok(())
    }

    fn schema_name(peer: &str) -> String {
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

    fn check(peer: &str, done: u64, backlog: u64) -> BenchResult<()> {
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

    /// 8 tasks on a plain table: claim `per_claim` pending jobs with
    /// `FOR UPDATE SKIP LOCKED`, then mark them done where still ours.
    async fn hand_written(admin: &PgPool, backlog: u64, per_claim: i64) -> BenchResult<f64> {
        let schema = schema_name("hand");
        let t = format!("\"{schema}\".jobs");
        for ddl in [
            format!("CREATE SCHEMA \"{schema}\""),
            format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, status text NOT NULL, payload jsonb NOT NULL, \
                 locked_by text, locked_at timestamptz)"
            ),
            format!("CREATE INDEX ON {t} (id) WHERE status = 'pending'"),
            format!(
                "INSERT INTO {t} (id, status, payload) SELECT g, 'pending', '{{}}' FROM generate_series(1, {backlog}) g"
            ),
            format!("ANALYZE {t}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(admin).await?;
        }
        let claim = format!(
            "UPDATE {t} SET status = 'running', locked_by = $1, locked_at = now() WHERE id IN \
             (SELECT id FROM {t} WHERE status = 'pending' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id"
        );
        let complete =
            format!("UPDATE {t} SET status = 'done' WHERE id = ANY($1) AND locked_by = $2");
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..CONCURRENCY {
            let (pool, claim, complete) = (admin.clone(), claim.clone(), complete.clone());
            tasks.spawn(async move {
                let owner = format!("hand-{w}-{}", uuid::Uuid::new_v4().simple());
                loop {
                    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
                        .bind(&owner)
                        .bind(per_claim)
                        .fetch_all(&pool)
                        .await?;
                    if ids.is_empty() {
                        return Ok::<_, sqlx::Error>(());
                    }
                    sqlx::query(sqlx::AssertSqlSafe(complete.clone()))
                        .bind(&ids)
                        .bind(&owner)
                        .execute(&pool)
                        .await?;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        let done: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {t} WHERE status = 'done'"
        )))
        .fetch_one(admin)
        .await?;
        check("hand-written", u64::try_from(done).unwrap_or(0), backlog)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(admin)
        .await?;
        Ok(rate(backlog, elapsed))
    }

    /// apalis 1.0 with `apalis-postgres`: push the backlog, then one worker with
    /// concurrency 8 and batches of 100 drains it.
    async fn apalis_peer(url: &str, admin: &PgPool, backlog: u64) -> BenchResult<f64> {
        use apalis::layers::WorkerBuilderExt;
        use apalis::prelude::{
            BoxDynError, ParallelizeExt, TaskSink, WorkerBuilder, WorkerContext,
        };
        use apalis_postgres::{Config, PostgresStorage};

        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .connect(url)
            .await?;
        PostgresStorage::setup(&pool).await?;
        // apalis keeps one table for every queue: start each run from an empty one.
        sqlx::query("TRUNCATE apalis.jobs").execute(admin).await?;
        let queue = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let config = Config::default().queue(queue.as_str()).batch_size(100);
        let mut storage = PostgresStorage::new(&pool).with_config(config);
        storage.push_bulk((0..backlog).collect()).await?;
        sqlx::query("ANALYZE apalis.jobs").execute(admin).await?;

        let seen = Arc::new(AtomicU64::new(0));
        let handler = {
            let seen = Arc::clone(&seen);
            move |_item: u64, worker: WorkerContext| {
                let seen = Arc::clone(&seen);
                async move {
                    if seen.fetch_add(1, Ordering::Relaxed) + 1 == backlog {
                        worker.stop()?;
                    }
                    Ok::<(), BoxDynError>(())
                }
            }
        };
        let worker = WorkerBuilder::new(format!("bench-apalis-{queue}"))
            .backend(storage)
            .concurrency(CONCURRENCY)
            .parallelize(tokio::spawn)
            .build(handler);
        let started = Instant::now();
        worker.run().await?;
        // Results are written after the handler returns: wait until every job is done.
        let done_sql = "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'";
        loop {
            let done: i64 = sqlx::query_scalar(done_sql)
                .bind(&queue)
                .fetch_one(admin)
                .await?;
            if u64::try_from(done).unwrap_or(0) >= backlog {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("apalis: {done} of {backlog} jobs done after 600 s").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        sqlx::query("TRUNCATE apalis.jobs").execute(admin).await?;
        pool.close().await;
        Ok(rate(backlog, elapsed))
    }
}

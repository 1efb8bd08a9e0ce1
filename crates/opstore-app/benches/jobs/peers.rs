//! The peers the job-claim bench measures opstore against, on the same server in
//! the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opstore_domain::Timestamp;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::pg::{BenchJob, BenchResult, CONCURRENCY, POOL, check, rate, schema_name};

/// 8 tasks on a plain table: claim `per_claim` pending jobs with
/// `FOR UPDATE SKIP LOCKED`, then mark them done where still ours.
pub(crate) async fn hand_written(admin: &PgPool, backlog: u64, per_claim: i64) -> BenchResult<f64> {
    let schema = schema_name("hand");
    let t = format!("\"{schema}\".jobs");
    let setup = [
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
    ];
    execute_all(admin, &setup).await?;
    let claim = format!(
        "UPDATE {t} SET status = 'running', locked_by = $1, locked_at = now() WHERE id IN \
         (SELECT id FROM {t} WHERE status = 'pending' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id"
    );
    let complete = format!("UPDATE {t} SET status = 'done' WHERE id = ANY($1) AND locked_by = $2");
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
    let done = format!("SELECT count(*) FROM {t} WHERE status = 'done'");
    finish(admin, &schema, &done, "hand-written", backlog, elapsed).await
}

/// apalis 1.0 with `apalis-postgres`: push the backlog, then one worker with
/// concurrency 8 and batches of 100 drains it.
pub(crate) async fn apalis_peer(url: &str, admin: &PgPool, backlog: u64) -> BenchResult<f64> {
    use apalis::layers::WorkerBuilderExt;
    use apalis::prelude::{BoxDynError, ParallelizeExt, TaskSink, WorkerBuilder, WorkerContext};
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

/// 8 tasks doing by hand what a claim does on opstore's document table: a
/// `jsonb` document with the queue fields copied into indexed columns, a
/// claim that rewrites the document (owner, token, expiry) and returns it
/// decoded, and an acknowledgement fenced by the token. A reference: it
/// shows what the document layout itself costs, apart from opstore.
pub(crate) async fn hand_written_documents(
    admin: &PgPool,
    backlog: u64,
    per_claim: i64,
) -> BenchResult<f64> {
    let schema = schema_name("handdoc");
    let t = format!("\"{schema}\".jobs");
    let setup = [
        format!("CREATE SCHEMA \"{schema}\""),
        format!(
            "CREATE TABLE {t} (id text PRIMARY KEY, doc jsonb NOT NULL, \
             due_at timestamptz, claimed_until timestamptz)"
        ),
        format!("CREATE INDEX ON {t} (due_at)"),
        format!("CREATE INDEX ON {t} (claimed_until)"),
        format!(
            "INSERT INTO {t} (id, doc, due_at) SELECT id, jsonb_build_object('id', id, \
             'status', 'pending', 'due_at', due), due::timestamptz FROM \
             (SELECT 'j' || lpad(g::text, 8, '0') AS id, to_char((now() - interval '1 hour' \
             + g * interval '1 microsecond') AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS due FROM generate_series(1, {backlog}) g) s"
        ),
        format!("ANALYZE {t}"),
    ];
    execute_all(admin, &setup).await?;
    let claim = format!(
        "UPDATE {t} SET doc = (doc - 'due_at') || jsonb_build_object('status', 'running', \
         'claimed_by', $1::text, 'claim_token', $2::text, 'claimed_until', $3::text), \
         due_at = NULL, claimed_until = $3::timestamptz WHERE id IN \
         (SELECT id FROM {t} WHERE due_at <= now() ORDER BY due_at LIMIT $4 \
         FOR UPDATE SKIP LOCKED) RETURNING doc"
    );
    let complete = format!(
        "UPDATE {t} SET doc = (doc - 'claimed_until') || '{{\"status\": \"done\"}}', \
         claimed_until = NULL WHERE id = ANY($1) AND doc ->> 'claim_token' = $2 \
         AND claimed_until IS NOT NULL"
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..CONCURRENCY {
        let (pool, claim, complete) = (admin.clone(), claim.clone(), complete.clone());
        tasks.spawn(async move {
            let owner = format!("handdoc-{w}");
            loop {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let until = Timestamp::now().add(Duration::from_secs(300)).to_text();
                let jobs: Vec<sqlx::types::Json<BenchJob>> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
                        .bind(&owner)
                        .bind(&token)
                        .bind(&until)
                        .bind(per_claim)
                        .fetch_all(&pool)
                        .await?;
                if jobs.is_empty() {
                    return Ok::<_, sqlx::Error>(());
                }
                let ids: Vec<String> = jobs.into_iter().map(|j| j.0.id).collect();
                sqlx::query(sqlx::AssertSqlSafe(complete.clone()))
                    .bind(&ids)
                    .bind(&token)
                    .execute(&pool)
                    .await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed();
    let done = format!("SELECT count(*) FROM {t} WHERE doc ->> 'status' = 'done'");
    finish(
        admin,
        &schema,
        &done,
        "hand-written documents",
        backlog,
        elapsed,
    )
    .await
}

/// Runs set-up statements in order.
async fn execute_all(admin: &PgPool, statements: &[String]) -> BenchResult<()> {
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(admin)
            .await?;
    }
    Ok(())
}

/// Checks that every job is done (`count_done` counts them), drops the peer's
/// schema and returns its rate.
async fn finish(
    admin: &PgPool,
    schema: &str,
    count_done: &str,
    peer: &str,
    backlog: u64,
    elapsed: Duration,
) -> BenchResult<f64> {
    let done: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_done))
        .fetch_one(admin)
        .await?;
    check(peer, u64::try_from(done).unwrap_or(0), backlog)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(admin)
    .await?;
    Ok(rate(backlog, elapsed))
}

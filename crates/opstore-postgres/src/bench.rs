//! The PostgreSQL adapter's benchmark scenarios against hand-written sqlx on the
//! same tables, in one run (feature `bench`).
//!
//! Every operation runs one warm-up round, then the measured rounds. Within a
//! round the two sides alternate call by call (hand-written, opstore,
//! hand-written, ...), so drift and load from other processes hit both alike.
//! Each figure is the median time per call of each side and the median of the
//! per-round ratios opstore / hand-written (lower is better; the goal is <=
//! 1.05). Then the change-feed insert-to-delivery latency at 2k events/s, open
//! loop. `OPSTORE_BENCH_ROUNDS` overrides the round count.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opstore_domain::{
    Entity, Filter, Query, Repository, StartAt, Store, StoreExt, Update, WatchRequest,
};
use opstore_testkit::bench::{BenchError, BenchResult, Better, Figure, Goal, Scale, median};
use opstore_testkit::fixtures::{self, Item, item};
use sqlx::Row;

use crate::{PgConfig, PgStore};

const GROUP: &str = "postgres";
const BASELINE: &str = "hand-written sqlx";

fn rounds(scale: Scale) -> usize {
    std::env::var("OPSTORE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(scale.pick(41, 11, 2))
}

fn lock_error() -> BenchError {
    BenchError::msg("postgres bench: the feed timing table's lock is poisoned")
}

fn doc(prefix: &str, i: usize) -> Item {
    item(&format!("{prefix}{i:07}"))
        .name(&format!("grp-{}", i % 10))
        .count(i as i64)
        .build()
}

/// Per-round times of both sides of one operation; round 0 is the warm-up.
struct Pair {
    name: &'static str,
    calls: usize,
    ours: Vec<Duration>,
    raw: Vec<Duration>,
}

impl Pair {
    fn new(name: &'static str, calls: usize) -> Self {
        Pair {
            name,
            calls,
            ours: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn per_call(&self, d: &[Duration]) -> f64 {
        median(
            d.iter()
                .skip(1)
                .map(|d| d.as_secs_f64() * 1e6 / self.calls as f64)
                .collect(),
        )
    }

    fn ratios(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.raw)
            .skip(1)
            .map(|(o, r)| o.as_secs_f64() / r.as_secs_f64())
            .collect()
    }

    fn figure(&self) -> Figure {
        let ratios = self.ratios();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        Figure::new(
            GROUP,
            self.name,
            "us/op",
            self.per_call(&self.ours),
            BASELINE,
            self.per_call(&self.raw),
        )
        .goal(Goal::ratio(Better::Lower, 1.05))
        .with_ratio(median(ratios.clone()))
        .detail(format!(
            "{} rounds after a warm-up, per-round ratios {lo:.2}-{hi:.2}",
            ratios.len()
        ))
    }
}

/// Runs every PostgreSQL scenario on the server at `url`, in a schema of its own
/// that is dropped afterwards, and returns its figures: insert one, get by id,
/// indexed find, `update_many`, `insert_many` and lease acquire + release against
/// hand-written sqlx (goal ratio <= 1.05), leases against advisory locks (for
/// reference), and the change feed's p99 insert-to-delivery latency at 2k
/// events/s (goal <= 10 ms).
pub async fn run(url: &str, scale: Scale) -> BenchResult<Vec<Figure>> {
    let mut config = PgConfig::from_url(url);
    config.schema = Some(format!("bench_{}", uuid::Uuid::new_v4().simple()));
    // Enough connections for the open-loop feed producers; the sequential
    // measurements use one at a time.
    config.max_connections = 32;
    let store = PgStore::connect(config).await?;
    store.migrate(&fixtures::schemas()).await?;
    let outcome = if std::env::var("OPSTORE_BENCH_ONLY").as_deref() == Ok("feed") {
        feed_latency(&store, scale).await.map(|f| vec![f])
    } else {
        scenarios(&store, scale).await
    };
    drop_schema(&store).await;
    outcome
}

/// The server's name and version, e.g. `PostgreSQL 16.4`, for the machine
/// description of a benchmark report.
pub async fn server_version(url: &str) -> BenchResult<String> {
    let store = PgStore::connect(PgConfig::from_url(url)).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(store.pool())
        .await?;
    store.close().await;
    Ok(format!("PostgreSQL {version}"))
}

async fn scenarios(store: &PgStore, scale: Scale) -> BenchResult<Vec<Figure>> {
    let pool = store.pool().clone();
    let repo = store.repository::<Item>()?;
    let rounds = rounds(scale) + 1;
    let mut results = Vec::new();

    // Insert one. Within a round the sides alternate call by call.
    let n = 20;
    let mut pair = Pair::new("insert one", n);
    for r in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let d = doc(&format!("raw{r}-"), i);
            let text = serde_json::to_string(&d)?;
            sqlx::query("INSERT INTO items (doc) VALUES ($1::jsonb)")
                .bind(text)
                .execute(&pool)
                .await?;
            raw += t.elapsed();
            let t = Instant::now();
            repo.insert(&doc(&format!("ops{r}-"), i)).await?;
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
    }
    results.push(pair);

    // Get by id.
    let n = 50;
    let mut pair = Pair::new("get by id", n);
    for r in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let row = sqlx::query("SELECT doc FROM items WHERE \"id\" = $1")
                .bind(format!("raw{r}-{:07}", i % 20))
                .fetch_optional(&pool)
                .await?;
            let item: Option<Item> = row.map(|r| serde_json::from_value(r.get(0))).transpose()?;
            black_box(item);
            raw += t.elapsed();
            let t = Instant::now();
            black_box(repo.get(&format!("ops{r}-{:07}", i % 20)).await?);
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
    }
    results.push(pair);

    // Bulk rows for finds and updates: 10 groups of 1k.
    let bulk: Vec<Item> = (0..10_000).map(|i| doc("bulk", i)).collect();
    repo.insert_many(&bulk).await?;
    sqlx::query("VACUUM ANALYZE items").execute(&pool).await?;

    // Indexed find, limit 50.
    let n = 20;
    let mut pair = Pair::new("indexed find (limit 50)", n);
    for _ in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let rows =
                sqlx::query("SELECT doc FROM items WHERE \"name\" = $1 ORDER BY \"id\" LIMIT 50")
                    .bind(format!("grp-{}", i % 10))
                    .fetch_all(&pool)
                    .await?;
            let items: Vec<Item> = rows
                .into_iter()
                .map(|r| serde_json::from_value(r.get(0)))
                .collect::<Result<_, _>>()?;
            black_box(items);
            raw += t.elapsed();
            let t = Instant::now();
            let q = Query::filter(Filter::eq("name", format!("grp-{}", i % 10))).limit(50);
            black_box(repo.find(&q).await?);
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
    }
    results.push(pair);

    // update_many of 1k rows. The hand-written side updates the even groups and
    // opstore the odd ones, so each finds its rows as it left them five rounds
    // before (updating rows the other side has just updated would leave the
    // second updater fuller pages and fewer HOT updates).
    let mut pair = Pair::new("update_many (1k rows)", 1);
    for r in 0..rounds {
        let t = Instant::now();
        sqlx::query(
            "UPDATE items SET doc = doc || jsonb_build_object('note', $2::text) WHERE \"name\" = $1",
        )
        .bind(format!("grp-{}", (2 * r) % 10))
        .bind(format!("raw-{r}"))
        .execute(&pool)
        .await?;
        pair.raw.push(t.elapsed());
        let t = Instant::now();
        let f = Filter::eq("name", format!("grp-{}", (2 * r + 1) % 10));
        let c = repo
            .update_many(&f, &Update::new().set("note", format!("ops-{r}")))
            .await?;
        black_box(c);
        pair.ours.push(t.elapsed());
    }
    results.push(pair);

    // insert_many of 10k rows against one hand-written UNNEST insert.
    let mut pair = Pair::new("insert_many (10k rows)", 1);
    for r in 0..((rounds - 1) / 3).max(1) + 1 {
        let raw_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-raw{r}-"), i))
            .collect();
        let our_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-ops{r}-"), i))
            .collect();
        let t = Instant::now();
        let texts: Vec<String> = raw_docs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        sqlx::query("INSERT INTO items (doc) SELECT d::jsonb FROM unnest($1::text[]) AS d")
            .bind(texts)
            .execute(&pool)
            .await?;
        pair.raw.push(t.elapsed());
        let t = Instant::now();
        repo.insert_many(&our_docs).await?;
        pair.ours.push(t.elapsed());
    }
    let many_us = pair.per_call(&pair.ours);
    results.push(pair);
    let insert_us = results[0].per_call(&results[0].ours);

    // Lease acquire + release, and advisory locks for reference.
    let locks = store.locks();
    let n = 20;
    let mut pair = Pair::new("lease acquire+release", n);
    let mut adv = Vec::new();
    let mut conn = pool.acquire().await?;
    for r in 0..rounds {
        let (mut raw, mut ours, mut advisory) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let name = format!("raw-{r}-{}", i % 20);
            sqlx::query(
                "INSERT INTO opstore_leases AS l (name, owner, token, expires_at) \
                 VALUES ($1, $2, 1, clock_timestamp() + interval '30 seconds') \
                 ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, token = l.token + 1, expires_at = EXCLUDED.expires_at \
                 WHERE l.expires_at <= clock_timestamp() RETURNING token",
            )
            .bind(&name)
            .bind("bench")
            .fetch_optional(&pool)
            .await?;
            sqlx::query("DELETE FROM opstore_leases WHERE name = $1 AND owner = $2")
                .bind(&name)
                .bind("bench")
                .execute(&pool)
                .await?;
            raw += t.elapsed();
            let t = Instant::now();
            let lease = locks
                .try_acquire(
                    &format!("ops-{r}-{}", i % 20),
                    "bench",
                    Duration::from_secs(30),
                )
                .await;
            let lease = lease?
                .ok_or_else(|| BenchError::msg("postgres bench: a fresh lease name was held"))?;
            locks.release(&lease).await?;
            ours += t.elapsed();
            let t = Instant::now();
            let key = (r * 1000 + i % 20) as i64;
            sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            advisory += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
        adv.push(advisory);
    }
    drop(conn);
    let adv_ratio = median(
        pair.ours
            .iter()
            .zip(&adv)
            .skip(1)
            .map(|(o, a)| o.as_secs_f64() / a.as_secs_f64())
            .collect(),
    );
    let adv_us = pair.per_call(&adv);
    results.push(pair);

    let mut figures: Vec<Figure> = results.iter().map(Pair::figure).collect();
    if let Some(many) = figures
        .iter_mut()
        .find(|f| f.scenario.starts_with("insert_many"))
    {
        many.detail = format!(
            "{}; {:.0} rows/s, {:.1}x the single-insert rate",
            many.detail,
            10_000.0 / (many_us / 1e6),
            insert_us * 10_000.0 / many_us
        );
    }
    let lease_us = results
        .last()
        .map(|p| p.per_call(&p.ours))
        .unwrap_or(f64::NAN);
    figures.push(
        Figure::new(
            GROUP,
            "lease acquire+release (reference)",
            "us/op",
            lease_us,
            "pg_try_advisory_lock + unlock",
            adv_us,
        )
        .with_ratio(adv_ratio)
        .detail("advisory locks hold no owner, expiry or fencing token: for scale only"),
    );
    figures.push(feed_latency(store, scale).await?);
    Ok(figures)
}

async fn drop_schema(store: &PgStore) {
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        store.config().schema_name()
    )))
    .execute(store.pool())
    .await;
}

/// When an event was sent, when its insert returned and when it was delivered.
#[derive(Default, Clone, Copy)]
struct Times {
    sent: Option<Instant>,
    acked: Option<Instant>,
    delivered: Option<Instant>,
}

/// Insert-to-delivery latency of the change feed at a steady 2k events/s: each
/// insert starts on its own schedule (open loop), whether or not earlier ones
/// have finished, so a slow commit shows up as latency instead of a lower rate.
///
/// The writers use a store of their own (another pool on the same schema), as
/// another service would: with one shared pool the watcher's fetches would
/// queue for a connection behind the inserts whenever commits slow down.
async fn feed_latency(store: &PgStore, scale: Scale) -> BenchResult<Figure> {
    const RATE: u64 = 2_000;
    let warmup: usize = scale.pick(1_000, 500, 50);
    let mut config = store.config().clone();
    config.max_connections = 32;
    let writers = PgStore::connect(config).await?;
    let total = warmup + scale.pick(10_000, 4_000, 200);
    let times: Arc<Mutex<HashMap<String, Times>>> = Arc::default();
    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Now,
            filter: None,
        })
        .await?;
    let producer = {
        let times = Arc::clone(&times);
        let repo = writers.repository::<Item>()?;
        tokio::spawn(async move {
            let repo = Arc::new(repo);
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::with_capacity(total);
            for i in 0..total {
                let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
                tokio::time::sleep_until(due).await;
                let key = format!("feed-{i:07}");
                if let Ok(mut times) = times.lock() {
                    times.entry(key.clone()).or_default().sent = Some(Instant::now());
                }
                let (repo, times) = (Arc::clone(&repo), Arc::clone(&times));
                tasks.push(tokio::spawn(async move {
                    let ok = repo.insert(&item(&key).build()).await.is_ok();
                    if let (true, Ok(mut times)) = (ok, times.lock()) {
                        times.entry(key).or_default().acked = Some(Instant::now());
                    }
                    ok
                }));
            }
            let mut failed = 0;
            for t in tasks {
                // A task that panicked counts as a failed insert.
                failed += usize::from(!t.await.unwrap_or(false));
            }
            (start.elapsed(), failed)
        })
    };
    // Deliveries until the producer is done and the feed has been quiet for a while.
    let mut producer = producer;
    let mut outcome = None;
    loop {
        tokio::select! {
            done = &mut producer, if outcome.is_none() => {
                outcome = Some(done?);
            }
            event = tokio::time::timeout(Duration::from_secs(5), stream.next()) => {
                let Ok(Some(event)) = event else { break };
                let event = event?;
                times.lock().map_err(|_| lock_error())?.entry(event.key).or_default().delivered =
                    Some(Instant::now());
            }
        }
    }
    let (elapsed, failed) = match outcome {
        Some(outcome) => outcome,
        None => producer.await?,
    };
    writers.close().await;
    let times = times.lock().map_err(|_| lock_error())?;
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    let mut commit = Vec::new();
    let mut lost = 0;
    for i in warmup..total {
        let Some(&t) = times.get(&format!("feed-{i:07}")) else {
            continue;
        };
        match (t.sent, t.acked, t.delivered) {
            (Some(s), Some(a), Some(d)) => {
                from_send.push(d.saturating_duration_since(s));
                from_ack.push(d.saturating_duration_since(a));
                commit.push(a.saturating_duration_since(s));
            }
            (_, Some(_), None) => lost += 1,
            _ => {}
        }
    }
    drop(times);
    if from_send.is_empty() {
        return Err(BenchError::msg(format!(
            "postgres bench: no change-feed event was delivered ({failed} of {total} inserts failed)"
        )));
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
    };
    let measured = from_send.len();
    let delivery_p99 = pct(&mut from_send, 0.99);
    let commit_p99 = pct(&mut commit, 0.99);
    Ok(Figure::new(
        GROUP,
        "change feed p99 at 2k events/s",
        "ms",
        delivery_p99,
        "insert call alone p99",
        commit_p99,
    )
    .goal(Goal::value(Better::Lower, 10.0, "ms"))
    .detail(format!(
        "{:.0} events/s reached, {measured} measured after {warmup} warm-up, {failed} inserts failed, \
         {lost} committed events not delivered; insert call to delivery p50 {:.2} ms, max {:.2} ms; \
         insert call alone p50 {:.2} ms; insert return to delivery p50 {:.2} ms, p99 {:.2} ms",
        (total - failed) as f64 / elapsed.as_secs_f64(),
        pct(&mut from_send, 0.50),
        pct(&mut from_send, 1.0),
        pct(&mut commit, 0.50),
        pct(&mut from_ack, 0.50),
        pct(&mut from_ack, 0.99),
    )))
}

//! The SQLite adapter's benchmark scenarios against hand-written sqlx-sqlite on
//! the same tables, in one run (feature `bench`).
//!
//! Both sides use one database file in WAL mode. Every operation runs one
//! warm-up round, then the measured rounds; within a round the two sides
//! alternate call by call, so drift hits both alike. Each figure is the median
//! time per call of each side and the median of the per-round ratios opstore /
//! hand-written (lower is better; the goal is <= 1.1).
//!
//! The hand-written side does the same job as opstore: a write also appends
//! its changelog row in the same transaction (what a service with a change
//! feed has to do), and reads decode the documents.

use std::hint::black_box;
use std::time::{Duration, Instant};

use opstore_domain::{Filter, Query, Repository, Store, StoreExt, Update};
use opstore_testkit::bench::{BenchResult, Better, Figure, Goal, Scale, median};
use opstore_testkit::fixtures::{self, Item, item};
use sqlx::Row;

use crate::{SqliteConfig, SqliteStore};

const GROUP: &str = "sqlite";
const BASELINE: &str = "hand-written sqlx-sqlite";

fn rounds(scale: Scale) -> usize {
    std::env::var("OPSTORE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(scale.pick(41, 11, 2))
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

    fn figure(&self) -> Figure {
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.raw)
            .skip(1)
            .map(|(o, r)| o.as_secs_f64() / r.as_secs_f64())
            .collect();
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
        .goal(Goal::ratio(Better::Lower, 1.1))
        .with_ratio(median(ratios.clone()))
        .detail(format!(
            "{} rounds after a warm-up, per-round ratios {lo:.2}-{hi:.2}",
            ratios.len()
        ))
    }
}

/// Runs every SQLite scenario in a fresh database file under `dir` (removed
/// afterwards) and returns its figures: insert one, get by id, indexed find,
/// `update_many`, `insert_many` and lease acquire + release, each against
/// hand-written sqlx-sqlite (goal ratio <= 1.1).
pub async fn run(dir: &std::path::Path, scale: Scale) -> BenchResult<Vec<Figure>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let file = dir.join(format!("opstore-bench-{}-{nanos}.db", std::process::id()));
    let store = SqliteStore::connect(SqliteConfig::from_url(format!(
        "sqlite://{}",
        file.display()
    )))
    .await?;
    store.migrate(&fixtures::schemas()).await?;
    let outcome = scenarios(&store, scale).await;
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    outcome
}

/// The linked SQLite library, e.g. `SQLite 3.51.3`, for the machine
/// description of a benchmark report.
pub async fn server_version() -> BenchResult<String> {
    let store = SqliteStore::connect(SqliteConfig::from_url("sqlite::memory:")).await?;
    let report = store.health().await?;
    store.close().await;
    Ok(report.server)
}

/// Folds the WAL into the database file between rounds, outside the timed
/// part. Otherwise the automatic checkpoint (every 1000 WAL pages, with a file
/// sync) lands on whichever side's commit crosses the threshold, a cost of
/// milliseconds that would fall on one side of a round at random.
async fn checkpoint(pool: &sqlx::SqlitePool) -> BenchResult<()> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await?;
    Ok(())
}

/// Appends the changelog row of a write, as the adapter does.
const LOG: &str = "INSERT INTO opstore_changelog (collection, op, key, doc, at) \
                   VALUES ('items', ?1, ?2, ?3, CAST(unixepoch('subsec') * 1000000 AS INTEGER))";

async fn scenarios(store: &SqliteStore, scale: Scale) -> BenchResult<Vec<Figure>> {
    let pool = store.pool().clone();
    let repo = store.repository::<Item>()?;
    let rounds = rounds(scale) + 1;
    let mut results = Vec::new();
    checkpoint(&pool).await?;

    // Insert one: the row and its changelog row in one write transaction.
    let n = 20;
    let mut pair = Pair::new("insert one", n);
    for r in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let d = doc(&format!("raw{r}-"), i);
            let text = serde_json::to_string(&d)?;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("INSERT INTO items (id, doc) VALUES (?1, ?2)")
                .bind(&d.id)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
            sqlx::query(LOG)
                .bind("insert")
                .bind(&d.id)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            raw += t.elapsed();
            let t = Instant::now();
            repo.insert(&doc(&format!("ops{r}-"), i)).await?;
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
        checkpoint(&pool).await?;
    }
    results.push(pair);

    // Get by id.
    let n = 50;
    let mut pair = Pair::new("get by id", n);
    for r in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let row = sqlx::query("SELECT doc FROM items WHERE id = ?1")
                .bind(format!("raw{r}-{:07}", i % 20))
                .fetch_optional(&pool)
                .await?;
            let item: Option<Item> = row
                .map(|r| serde_json::from_str(r.get::<&str, _>(0)))
                .transpose()?;
            black_box(item);
            raw += t.elapsed();
            let t = Instant::now();
            black_box(repo.get(&format!("ops{r}-{:07}", i % 20)).await?);
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
        checkpoint(&pool).await?;
    }
    results.push(pair);

    // Bulk rows for finds and updates: 10 groups of 1k.
    let bulk: Vec<Item> = (0..10_000).map(|i| doc("bulk", i)).collect();
    repo.insert_many(&bulk).await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    checkpoint(&pool).await?;

    // Indexed find, limit 50.
    let n = 20;
    let mut pair = Pair::new("indexed find (limit 50)", n);
    for _ in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let rows =
                sqlx::query("SELECT doc FROM items WHERE \"name\" = ?1 ORDER BY id LIMIT 50")
                    .bind(format!("grp-{}", i % 10))
                    .fetch_all(&pool)
                    .await?;
            let items: Vec<Item> = rows
                .iter()
                .map(|r| serde_json::from_str(r.get::<&str, _>(0)))
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
        checkpoint(&pool).await?;
    }
    results.push(pair);

    // update_many of 1k rows: set a field and log every changed row. The
    // hand-written side updates the even groups and opstore the odd ones.
    let mut pair = Pair::new("update_many (1k rows)", 1);
    for r in 0..rounds {
        let t = Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "UPDATE items SET doc = json_set(doc, '$.note', ?2) WHERE \"name\" = ?1 RETURNING id, doc",
        )
        .bind(format!("grp-{}", (2 * r) % 10))
        .bind(format!("raw-{r}"))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            sqlx::query(LOG)
                .bind("update")
                .bind(row.get::<&str, _>(0))
                .bind(row.get::<&str, _>(1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        pair.raw.push(t.elapsed());
        let t = Instant::now();
        let f = Filter::eq("name", format!("grp-{}", (2 * r + 1) % 10));
        let c = repo
            .update_many(&f, &Update::new().set("note", format!("ops-{r}")))
            .await?;
        black_box(c);
        pair.ours.push(t.elapsed());
        checkpoint(&pool).await?;
    }
    results.push(pair);

    // insert_many of 10k rows against a prepared insert per row in one transaction.
    let mut pair = Pair::new("insert_many (10k rows)", 1);
    for r in 0..((rounds - 1) / 3).max(1) + 1 {
        let raw_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-raw{r}-"), i))
            .collect();
        let our_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-ops{r}-"), i))
            .collect();
        let t = Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for d in &raw_docs {
            let text = serde_json::to_string(d)?;
            sqlx::query("INSERT INTO items (id, doc) VALUES (?1, ?2)")
                .bind(&d.id)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
            sqlx::query(LOG)
                .bind("insert")
                .bind(&d.id)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        pair.raw.push(t.elapsed());
        let t = Instant::now();
        repo.insert_many(&our_docs).await?;
        pair.ours.push(t.elapsed());
        checkpoint(&pool).await?;
    }
    results.push(pair);

    // Lease acquire + release.
    let locks = store.locks();
    let n = 20;
    let mut pair = Pair::new("lease acquire+release", n);
    for r in 0..rounds {
        let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            let t = Instant::now();
            let name = format!("raw-{r}-{i}");
            sqlx::query(
                "INSERT INTO opstore_leases (name, owner, token, expires_at) \
                 VALUES (?1, ?2, 1, CAST(unixepoch('subsec') * 1000000 AS INTEGER) + 30000000) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = opstore_leases.token + 1, \
                     expires_at = excluded.expires_at \
                 WHERE opstore_leases.expires_at <= CAST(unixepoch('subsec') * 1000000 AS INTEGER) \
                 RETURNING token",
            )
            .bind(&name)
            .bind("bench")
            .fetch_optional(&pool)
            .await?;
            sqlx::query("UPDATE opstore_leases SET expires_at = 0 WHERE name = ?1 AND owner = ?2")
                .bind(&name)
                .bind("bench")
                .execute(&pool)
                .await?;
            raw += t.elapsed();
            let t = Instant::now();
            let lease = locks
                .try_acquire(&format!("ops-{r}-{i}"), "bench", Duration::from_secs(30))
                .await?
                .ok_or_else(|| {
                    opstore_testkit::bench::BenchError::msg(
                        "sqlite bench: a fresh lease name was held",
                    )
                })?;
            locks.release(&lease).await?;
            ours += t.elapsed();
        }
        pair.raw.push(raw);
        pair.ours.push(ours);
        checkpoint(&pool).await?;
    }
    results.push(pair);

    Ok(results.iter().map(Pair::figure).collect())
}

//! The MongoDB adapter's benchmark scenarios against the raw `mongodb` driver
//! with typed collections, on the same server in the same run (feature `bench`).
//!
//! Each operation runs on opstore, then on the raw driver, after a warm-up of
//! both paths; the figure is the time per operation of each and their ratio
//! (lower is better; the goal is <= 1.05), plus `insert_many` of 10k documents
//! against single inserts (goal: >= 10x faster per document).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::doc;
use opstore_domain::{Filter, Query, Repository, Store, StoreExt, Update};
use opstore_testkit::bench::{BenchError, BenchResult, Better, Figure, Goal, Scale};
use opstore_testkit::fixtures::{self, Item, item};
use serde::{Deserialize, Serialize};

use crate::{MongoConfig, MongoStore};

const GROUP: &str = "mongo";
const BASELINE: &str = "raw mongodb driver";

/// The raw driver's typed document: the entity with `_id` = its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawItem {
    #[serde(rename = "_id")]
    key: String,
    #[serde(flatten)]
    item: Item,
}

fn per_op(d: Duration, n: usize) -> Duration {
    d / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

fn figure(name: &str, ours: Duration, raw: Duration, calls: usize) -> Figure {
    Figure::new(
        GROUP,
        name,
        "us/op",
        ours.as_secs_f64() * 1e6,
        BASELINE,
        raw.as_secs_f64() * 1e6,
    )
    .goal(Goal::ratio(Better::Lower, 1.05))
    .detail(format!("{calls} calls per side after a warm-up of both"))
}

/// Runs every MongoDB scenario on the server at `url`, in a database of its own
/// that is dropped afterwards, and returns its figures.
pub async fn run(url: &str, scale: Scale) -> BenchResult<Vec<Figure>> {
    let rounds: usize = scale.pick(300, 150, 20);
    let database = format!(
        "bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let store = MongoStore::connect(MongoConfig::new(url, database)).await?;
    let outcome = scenarios(&store, rounds, scale).await;
    let dropped = store.database().drop().await;
    store.close().await;
    let figures = outcome?;
    dropped?;
    Ok(figures)
}

/// The version the server reports in `buildInfo`, for the machine description of
/// a benchmark report (a MongoDB-wire server may report the MongoDB version it
/// speaks rather than its own).
pub async fn server_version(url: &str) -> BenchResult<String> {
    let store = MongoStore::connect(MongoConfig::new(url, "admin")).await?;
    let info = store
        .database()
        .run_command(doc! { "buildInfo": 1 })
        .await?;
    store.close().await;
    let version = info.get_str("version").unwrap_or("unknown");
    Ok(format!(
        "MongoDB wire protocol, buildInfo version {version}"
    ))
}

async fn scenarios(store: &MongoStore, rounds: usize, scale: Scale) -> BenchResult<Vec<Figure>> {
    store.migrate(&fixtures::schemas()).await?;
    let mut figures = Vec::new();
    let repo = store.repository::<Item>()?;
    let raw_db = store.database().clone();
    raw_db
        .collection::<RawItem>("raw_items")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1 })
                .build(),
        )
        .await?;
    let raw = raw_db.collection::<RawItem>("raw_items");
    let name_of = |i: usize| format!("group-{}", i % 6);

    // Warm both paths (connections, server caches) before timing anything.
    for i in 0..50 {
        repo.insert(&item(&format!("w{i}")).build()).await?;
        let it = item(&format!("w{i}")).build();
        raw.insert_one(RawItem {
            key: it.id.clone(),
            item: it,
        })
        .await?;
    }

    // Insert one.
    let start = Instant::now();
    for i in 0..rounds {
        repo.insert(&item(&format!("o{i}")).name(&name_of(i)).build())
            .await?;
    }
    let ours = per_op(start.elapsed(), rounds);
    let start = Instant::now();
    for i in 0..rounds {
        let it = item(&format!("o{i}")).name(&name_of(i)).build();
        raw.insert_one(RawItem {
            key: it.id.clone(),
            item: it,
        })
        .await?;
    }
    figures.push(figure(
        "insert one",
        ours,
        per_op(start.elapsed(), rounds),
        rounds,
    ));

    // Get by id.
    let start = Instant::now();
    for i in 0..rounds {
        repo.get(&format!("o{i}"))
            .await?
            .ok_or_else(|| BenchError::msg("mongo bench: an inserted document is missing"))?;
    }
    let ours = per_op(start.elapsed(), rounds);
    let start = Instant::now();
    for i in 0..rounds {
        raw.find_one(doc! { "_id": format!("o{i}") })
            .await?
            .ok_or_else(|| BenchError::msg("mongo bench: an inserted document is missing"))?;
    }
    figures.push(figure(
        "get by id",
        ours,
        per_op(start.elapsed(), rounds),
        rounds,
    ));

    // Indexed find, limit 50.
    // The inserts above spread over six names; a find returns up to 50 of them.
    // Name `i % 6` went to the inserts whose index has that remainder.
    let per_group = |i: usize| ((rounds + 5 - i % 6) / 6).min(50) as u64;
    let q = |i: usize| Query::filter(Filter::eq("name", name_of(i))).limit(50);
    let start = Instant::now();
    for i in 0..50 {
        check(repo.find(&q(i)).await?.len(), per_group(i))?;
    }
    let ours = per_op(start.elapsed(), 50);
    let start = Instant::now();
    for i in 0..50 {
        let docs: Vec<RawItem> = raw
            .find(doc! { "name": name_of(i) })
            .sort(doc! { "_id": 1 })
            .limit(50)
            .await?
            .try_collect()
            .await?;
        check(docs.len(), per_group(i))?;
    }
    figures.push(figure(
        "indexed find limit 50",
        ours,
        per_op(start.elapsed(), 50),
        50,
    ));

    // update_many of 1k documents.
    let batch: Vec<Item> = (0..1000)
        .map(|i| item(&format!("u{i}")).name("bulk").build())
        .collect();
    repo.insert_many(&batch).await?;
    let raw_batch: Vec<RawItem> = batch
        .iter()
        .map(|it| RawItem {
            key: it.id.clone(),
            item: it.clone(),
        })
        .collect();
    raw.insert_many(raw_batch).await?;
    let start = Instant::now();
    for n in 1..=5 {
        let c = repo
            .update_many(&Filter::eq("name", "bulk"), &Update::new().set("count", n))
            .await?;
        check(c.matched, 1000)?;
    }
    let ours = per_op(start.elapsed(), 5);
    let start = Instant::now();
    for n in 1..=5_i64 {
        let r = raw
            .update_many(doc! { "name": "bulk" }, doc! { "$set": { "count": n } })
            .await?;
        check(r.matched_count, 1000)?;
    }
    figures.push(figure(
        "update_many 1k",
        ours,
        per_op(start.elapsed(), 5),
        5,
    ));

    // insert_many 10k against single inserts (per document).
    let many: Vec<Item> = (0..10_000)
        .map(|i| item(&format!("m{i}")).build())
        .collect();
    let start = Instant::now();
    repo.insert_many(&many).await?;
    let batched = per_op(start.elapsed(), many.len());
    let singles = scale.pick(1000, 500, 50);
    let start = Instant::now();
    for i in 0..singles {
        repo.insert(&item(&format!("s{i}")).build()).await?;
    }
    let single = per_op(start.elapsed(), singles);
    let speedup = single.as_secs_f64() / batched.as_secs_f64().max(1e-9);
    figures.push(
        Figure::new(
            GROUP,
            "insert_many 10k (per document)",
            "us/op",
            batched.as_secs_f64() * 1e6,
            "single inserts (per document)",
            single.as_secs_f64() * 1e6,
        )
        .goal(Goal {
            text: "speed-up >= 10x (ratio <= 0.1)".into(),
            ..Goal::ratio(Better::Lower, 0.1)
        })
        .detail(format!("speed-up {speedup:.1}x; {singles} single inserts")),
    );
    Ok(figures)
}

fn check(found: impl TryInto<u64>, expected: u64) -> BenchResult<()> {
    let found = found.try_into().unwrap_or(u64::MAX);
    if found != expected {
        return Err(BenchError::msg(format!(
            "mongo bench: {found} documents matched, expected {expected}"
        )));
    }
    Ok(())
}

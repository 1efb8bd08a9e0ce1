//! The memory adapter's benchmark scenarios against a plain
//! `RwLock<HashMap<String, Item>>` + clone baseline, in one run (feature `bench`).
//!
//! The machine this runs on is usually shared, so the two sides are measured in
//! alternating chunks of operations (both see the same load and the same cache
//! pressure), every figure is taken over several rounds after a warm-up round, and
//! the median of the per-round ratios is reported. `OPSTORE_BENCH_ROUNDS` sets the
//! number of rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use opstore_domain::{CollectionRepository, Entity, Filter, Query, Repository, Store, StoreExt};
use opstore_testkit::bench::{BenchError, BenchResult, Better, Figure, Goal, Scale, median};
use opstore_testkit::fixtures::{self, Item, item};

use crate::{MemoryConfig, MemoryStore};

/// Operations per timed chunk; the two sides alternate chunk by chunk.
const CHUNK: usize = 500;
/// Equality finds per round (each matches 1 in 1,000 items).
const FINDS: usize = 15;
const GROUP: &str = "memory";
const BASELINE: &str = "RwLock<HashMap> + clone";

type Baseline = RwLock<HashMap<String, Item>>;
type Repo = CollectionRepository<Item>;

fn items(prefix: &str, n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            item(&format!("{prefix}{i}"))
                .name(&format!("name-{}", i % 1000))
                .note(&format!("name-{}", i % 1000))
                .count(i as i64)
                .build()
        })
        .collect()
}

fn per_op(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// Per-operation times of one round, baseline and opstore.
struct Round {
    base_insert: f64,
    ops_insert: f64,
    base_get: f64,
    ops_get: f64,
}

async fn fresh_repo() -> BenchResult<(MemoryStore, Repo)> {
    let store = MemoryStore::new(MemoryConfig::default());
    store.migrate(&fixtures::schemas()).await?;
    let repo = store.repository::<Item>()?;
    Ok((store, repo))
}

fn lock_error() -> BenchError {
    BenchError::msg("memory bench: the baseline map's lock is poisoned")
}

fn insert_base(chunk: &[Item], base: &Baseline) -> BenchResult<Duration> {
    let t = Instant::now();
    for d in chunk {
        base.write()
            .map_err(|_| lock_error())?
            .insert(d.id.clone(), d.clone());
    }
    Ok(t.elapsed())
}

fn get_base(chunk: &[Item], base: &Baseline) -> BenchResult<Duration> {
    let t = Instant::now();
    for d in chunk {
        black_box(base.read().map_err(|_| lock_error())?.get(&d.id).cloned());
    }
    Ok(t.elapsed())
}

/// Inserts then reads every item on both sides, alternating chunks.
async fn round(docs: &[Item], repo: &Repo, base: &Baseline) -> BenchResult<Round> {
    let (mut base_insert, mut ops_insert) = (Duration::ZERO, Duration::ZERO);
    for (i, chunk) in docs.chunks(CHUNK).enumerate() {
        // Alternate which side goes first so neither always runs on a warmer cache.
        if i % 2 == 0 {
            base_insert += insert_base(chunk, base)?;
        }
        let t = Instant::now();
        for d in chunk {
            repo.insert(d).await?;
        }
        ops_insert += t.elapsed();
        if i % 2 == 1 {
            base_insert += insert_base(chunk, base)?;
        }
    }
    let (mut base_get, mut ops_get) = (Duration::ZERO, Duration::ZERO);
    for (i, chunk) in docs.chunks(CHUNK).enumerate() {
        if i % 2 == 0 {
            base_get += get_base(chunk, base)?;
        }
        let t = Instant::now();
        for d in chunk {
            black_box(repo.get(&d.id).await?);
        }
        ops_get += t.elapsed();
        if i % 2 == 1 {
            base_get += get_base(chunk, base)?;
        }
    }
    Ok(Round {
        base_insert: per_op(base_insert, docs.len()),
        ops_insert: per_op(ops_insert, docs.len()),
        base_get: per_op(base_get, docs.len()),
        ops_get: per_op(ops_get, docs.len()),
    })
}

/// Indexed and scanning finds of the same selectivity, interleaved; returns the
/// median time of each kind in microseconds (a median, because one find that
/// loses the CPU would otherwise decide the round).
async fn finds(repo: &Repo, n: usize) -> BenchResult<(f64, f64)> {
    let (mut indexed, mut scan) = (Vec::new(), Vec::new());
    for r in 0..FINDS {
        let value = format!("name-{}", r * 97 % 1000);
        let t = Instant::now();
        let found = repo
            .find(&Query::filter(Filter::eq("name", value.clone())))
            .await?;
        indexed.push(t.elapsed().as_secs_f64() * 1e6);
        // `note` holds the same value as `name` but has no index.
        let t = Instant::now();
        let scanned = repo.find(&Query::filter(Filter::eq("note", value))).await?;
        scan.push(t.elapsed().as_secs_f64() * 1e6);
        if found.len() != n / 1000 || scanned.len() != n / 1000 {
            return Err(BenchError::msg(format!(
                "memory bench: a find matched {} (indexed) and {} (scan) items, expected {}",
                found.len(),
                scanned.len(),
                n / 1000
            )));
        }
    }
    Ok((median(indexed), median(scan)))
}

/// The two parts of an insert that happen before the store is reached, in ns.
fn breakdown(docs: &[Item]) -> BenchResult<(f64, f64)> {
    let schema = Item::schema();
    let (mut serialize, mut validate) = (Duration::ZERO, Duration::ZERO);
    for d in docs {
        let t = Instant::now();
        let v = serde_json::to_value(d)?;
        let t2 = Instant::now();
        schema.check_document(&v)?;
        validate += t2.elapsed();
        serialize += t2 - t;
        black_box(v);
    }
    Ok((per_op(serialize, docs.len()), per_op(validate, docs.len())))
}

fn spread(xs: &[f64]) -> String {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}..{hi:.2}")
}

/// Runs every memory scenario and returns its figures: get by id (goal ratio
/// <= 2), insert (goal <= 3), and an indexed equality find against a full scan
/// (goal: at least 100x faster, ratio <= 0.01).
pub async fn run(scale: Scale) -> BenchResult<Vec<Figure>> {
    // The find speed-up grows with the collection, so the quick scale keeps 100k items.
    let n = scale.pick(100_000, 100_000, 2_000);
    let rounds: usize = std::env::var("OPSTORE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(scale.pick(5, 3, 1));
    let docs = items("k", n);

    // Warm-up: fault in the allocator's pages and the code paths.
    {
        let (_store, repo) = fresh_repo().await?;
        round(&docs[..n / 10], &repo, &Baseline::default()).await?;
    }

    let mut results = Vec::with_capacity(rounds);
    let mut find_results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (_store, repo) = fresh_repo().await?;
        let base = Baseline::default();
        results.push(round(&docs, &repo, &base).await?);
        find_results.push(finds(&repo, n).await?);
    }
    let (serialize, validate) = breakdown(&docs)?;

    let col = |f: fn(&Round) -> f64| median(results.iter().map(f).collect());
    let get_ratios: Vec<f64> = results.iter().map(|r| r.ops_get / r.base_get).collect();
    let insert_ratios: Vec<f64> = results
        .iter()
        .map(|r| r.ops_insert / r.base_insert)
        .collect();
    let find_ratios: Vec<f64> = find_results.iter().map(|(i, s)| i / s).collect();
    let sizes = format!("{n} items, {rounds} rounds after a warm-up");

    Ok(vec![
        Figure::new(
            GROUP,
            "get by id",
            "ns/op",
            col(|r| r.ops_get),
            BASELINE,
            col(|r| r.base_get),
        )
        .goal(Goal::ratio(Better::Lower, 2.0))
        .with_ratio(median(get_ratios.clone()))
        .detail(format!("{sizes}; per-round ratios {}", spread(&get_ratios))),
        Figure::new(
            GROUP,
            "insert",
            "ns/op",
            col(|r| r.ops_insert),
            BASELINE,
            col(|r| r.base_insert),
        )
        .goal(Goal::ratio(Better::Lower, 3.0))
        .with_ratio(median(insert_ratios.clone()))
        .detail(format!(
            "{sizes}; per-round ratios {}; of which entity -> document tree {serialize:.0} ns, schema check {validate:.0} ns",
            spread(&insert_ratios)
        )),
        Figure::new(
            GROUP,
            "indexed equality find",
            "us/op",
            median(find_results.iter().map(|f| f.0).collect()),
            "full scan of an unindexed field",
            median(find_results.iter().map(|f| f.1).collect()),
        )
        .goal(Goal {
            text: "speed-up >= 100x (ratio <= 0.01)".into(),
            ..Goal::ratio(Better::Lower, 0.01)
        })
        .with_ratio(median(find_ratios.clone()))
        .detail(format!(
            "{n} items, each find matches {}; per-round ratios {}",
            n / 1000,
            spread(&find_ratios)
        )),
    ])
}

//! Memory adapter against a plain `RwLock<HashMap>` + clone baseline, in one run.
//!
//! Prints one ratio per operation (opstore time / baseline time, lower is better)
//! and the speed-up of an indexed equality find over a full scan.
//!
//! The machine this runs on is usually shared, so the two sides are measured in
//! alternating chunks of operations (both see the same load and the same cache
//! pressure), every figure is taken over several rounds after a warm-up round, and
//! the median ratio is reported. `OPSTORE_BENCH_ROUNDS` sets the number of rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use opstore_domain::{CollectionRepository, Entity, Filter, Query, Repository, Store, StoreExt};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_testkit::fixtures::{self, Item, item};

const N: usize = 100_000;
/// Operations per timed chunk; the two sides alternate chunk by chunk.
const CHUNK: usize = 500;
/// Equality finds per round (each matches 100 of the 100k items).
const FINDS: usize = 15;

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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

/// Per-operation times of one round, baseline and opstore.
#[derive(Default)]
struct Round {
    base_insert: f64,
    ops_insert: f64,
    base_get: f64,
    ops_get: f64,
    /// Opstore / baseline time of each pair of adjacent chunks.
    insert_chunks: Vec<f64>,
    get_chunks: Vec<f64>,
}

async fn fresh_repo() -> (MemoryStore, Repo) {
    let store = MemoryStore::new(MemoryConfig::default());
    store.migrate(&fixtures::schemas()).await.expect("migrate");
    let repo = store.repository::<Item>().expect("repository");
    (store, repo)
}

/// Inserts then reads every item on both sides, alternating chunks.
async fn round(docs: &[Item], repo: &Repo, base: &Baseline) -> Round {
    let (mut base_insert, mut ops_insert) = (Duration::ZERO, Duration::ZERO);
    let mut insert_chunks = Vec::new();
    for (i, chunk) in docs.chunks(CHUNK).enumerate() {
        // Alternate which side goes first so neither always runs on a warmer cache.
        let base_first = i % 2 == 0;
        let mut b = Duration::ZERO;
        if base_first {
            b = insert_base(chunk, base);
        }
        let t = Instant::now();
        for d in chunk {
            repo.insert(d).await.expect("insert");
        }
        let o = t.elapsed();
        if !base_first {
            b = insert_base(chunk, base);
        }
        base_insert += b;
        ops_insert += o;
        insert_chunks.push(o.as_secs_f64() / b.as_secs_f64());
    }
    let (mut base_get, mut ops_get) = (Duration::ZERO, Duration::ZERO);
    let mut get_chunks = Vec::new();
    for (i, chunk) in docs.chunks(CHUNK).enumerate() {
        let base_first = i % 2 == 0;
        let mut b = Duration::ZERO;
        if base_first {
            b = get_base(chunk, base);
        }
        let t = Instant::now();
        for d in chunk {
            black_box(repo.get(&d.id).await.expect("get"));
        }
        let o = t.elapsed();
        if !base_first {
            b = get_base(chunk, base);
        }
        base_get += b;
        ops_get += o;
        get_chunks.push(o.as_secs_f64() / b.as_secs_f64());
    }
    Round {
        base_insert: per_op(base_insert, docs.len()),
        ops_insert: per_op(ops_insert, docs.len()),
        base_get: per_op(base_get, docs.len()),
        ops_get: per_op(ops_get, docs.len()),
        insert_chunks,
        get_chunks,
    }
}

fn insert_base(chunk: &[Item], base: &Baseline) -> Duration {
    let t = Instant::now();
    for d in chunk {
        base.write()
            .expect("baseline lock")
            .insert(d.id.clone(), d.clone());
    }
    t.elapsed()
}

fn get_base(chunk: &[Item], base: &Baseline) -> Duration {
    let t = Instant::now();
    for d in chunk {
        black_box(base.read().expect("baseline lock").get(&d.id).cloned());
    }
    t.elapsed()
}

/// Indexed and scanning finds of the same selectivity, interleaved; returns the
/// median time of each kind in microseconds (a median, because one find that
/// loses the CPU would otherwise decide the round).
async fn finds(repo: &Repo) -> (f64, f64) {
    let (mut indexed, mut scan) = (Vec::new(), Vec::new());
    for r in 0..FINDS {
        let value = format!("name-{}", r * 97 % 1000);
        let t = Instant::now();
        let found = repo
            .find(&Query::filter(Filter::eq("name", value.clone())))
            .await
            .expect("find");
        indexed.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(found.len(), N / 1000);
        // `note` holds the same value as `name` but has no index.
        let t = Instant::now();
        let found = repo
            .find(&Query::filter(Filter::eq("note", value)))
            .await
            .expect("scan");
        scan.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(found.len(), N / 1000);
    }
    (median(indexed), median(scan))
}

/// The two parts of an insert that happen before the store is reached, on a hot
/// document as in a real insert.
fn breakdown(docs: &[Item]) -> (f64, f64) {
    let schema = Item::schema();
    let (mut serialize, mut validate) = (Duration::ZERO, Duration::ZERO);
    for d in docs {
        let t = Instant::now();
        let v = serde_json::to_value(d).expect("serialize");
        let t2 = Instant::now();
        schema.check_document(&v).expect("valid");
        validate += t2.elapsed();
        serialize += t2 - t;
        black_box(v);
    }
    (per_op(serialize, docs.len()), per_op(validate, docs.len()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let rounds: usize = std::env::var("OPSTORE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(5);
    let docs = items("k", N);

    // Warm-up: fault in the allocator's pages and the code paths.
    {
        let (_store, repo) = fresh_repo().await;
        round(&docs[..N / 10], &repo, &Baseline::default()).await;
    }

    let mut results = Vec::with_capacity(rounds);
    let mut find_results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (_store, repo) = fresh_repo().await;
        let base = Baseline::default();
        results.push(round(&docs, &repo, &base).await);
        find_results.push(finds(&repo).await);
    }
    let (serialize, validate) = breakdown(&docs);

    let col = |f: fn(&Round) -> f64| median(results.iter().map(f).collect());
    let insert_ratios: Vec<f64> = results
        .iter()
        .map(|r| r.ops_insert / r.base_insert)
        .collect();
    let get_ratios: Vec<f64> = results.iter().map(|r| r.ops_get / r.base_get).collect();
    let speedups: Vec<f64> = find_results.iter().map(|(i, s)| s / i).collect();
    let spread = |xs: &[f64]| {
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}..{hi:.2}")
    };

    let chunks = |f: fn(&Round) -> &Vec<f64>| {
        median(results.iter().flat_map(|r| f(r).iter().copied()).collect())
    };

    println!(
        "memory bench: {N} items, {rounds} rounds after a warm-up, medians; \
         baseline = RwLock<HashMap<String, Item>> + clone"
    );
    println!(
        "  ratio = median over rounds of (opstore total / baseline total); \
         chunks = median over every pair of adjacent {CHUNK}-operation chunks"
    );
    println!(
        "get by id:    {:>7.0} ns vs {:>6.0} ns  ratio {:.2}x (rounds {}, chunks {:.2}x) (goal <= 2x)",
        col(|r| r.ops_get),
        col(|r| r.base_get),
        median(get_ratios.clone()),
        spread(&get_ratios),
        chunks(|r| &r.get_chunks)
    );
    println!(
        "insert:       {:>7.0} ns vs {:>6.0} ns  ratio {:.2}x (rounds {}, chunks {:.2}x) (goal <= 3x)",
        col(|r| r.ops_insert),
        col(|r| r.base_insert),
        median(insert_ratios.clone()),
        spread(&insert_ratios),
        chunks(|r| &r.insert_chunks)
    );
    println!("  of which entity -> document tree {serialize:.0} ns, schema check {validate:.0} ns");
    println!(
        "indexed find: {:>7.1} us vs scan {:>7.0} us  speed-up {:.0}x (rounds {}) (goal >= 100x)",
        median(find_results.iter().map(|f| f.0).collect()),
        median(find_results.iter().map(|f| f.1).collect()),
        median(speedups.clone()),
        spread(&speedups)
    );
}

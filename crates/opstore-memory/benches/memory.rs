//! Memory adapter against a plain `RwLock<HashMap>` + clone baseline, in one run.
//!
//! Prints one ratio per operation (opstore time / baseline time, lower is better)
//! and the speed-up of an indexed equality find over a full scan.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use opstore_domain::{Filter, Query, Repository, Store, StoreExt};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_testkit::fixtures::{self, Item, item};

const N: usize = 100_000;

fn items(prefix: &str) -> Vec<Item> {
    (0..N)
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

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let docs = items("k");

    // Baseline: a locked map of cloned values.
    let base: Arc<RwLock<HashMap<String, Item>>> = Arc::new(RwLock::new(HashMap::new()));
    let t = Instant::now();
    for d in &docs {
        base.write().unwrap().insert(d.id.clone(), d.clone());
    }
    let base_insert = per_op(t.elapsed(), N);
    let t = Instant::now();
    for d in &docs {
        black_box(base.read().unwrap().get(&d.id).cloned());
    }
    let base_get = per_op(t.elapsed(), N);

    let t = Instant::now();
    for d in &docs {
        black_box(serde_json::to_value(d).expect("serialize"));
    }
    let serialize = per_op(t.elapsed(), N);
    let schema = <Item as opstore_domain::Entity>::schema();
    let values: Vec<_> = docs
        .iter()
        .map(|d| serde_json::to_value(d).expect("serialize"))
        .collect();
    let t = Instant::now();
    for v in &values {
        schema.check_document(v).expect("valid");
    }
    let validate = per_op(t.elapsed(), N);

    let store = MemoryStore::new(MemoryConfig::default());
    store.migrate(&fixtures::schemas()).await.expect("migrate");
    let repo = store.repository::<Item>().expect("repository");
    let t = Instant::now();
    for d in &docs {
        repo.insert(d).await.expect("insert");
    }
    let ops_insert = per_op(t.elapsed(), N);
    let t = Instant::now();
    for d in &docs {
        black_box(repo.get(&d.id).await.expect("get"));
    }
    let ops_get = per_op(t.elapsed(), N);

    // The same selectivity (100 of 100k) through an index and through a scan.
    let rounds = 20;
    let t = Instant::now();
    for r in 0..rounds {
        let found = repo
            .find(&Query::filter(Filter::eq("name", format!("name-{r}"))))
            .await
            .expect("find");
        assert_eq!(found.len(), N / 1000);
    }
    let indexed = per_op(t.elapsed(), rounds);
    let t = Instant::now();
    for r in 0..rounds {
        // `note` holds the same value as `name` but has no index.
        let found = repo
            .find(&Query::filter(Filter::eq("note", format!("name-{r}"))))
            .await
            .expect("scan");
        assert_eq!(found.len(), N / 1000);
    }
    let scan = per_op(t.elapsed(), rounds);

    println!("memory bench: {N} items, baseline = RwLock<HashMap<String, Item>> + clone");
    println!(
        "get by id:    {ops_get:>9.0} ns vs {base_get:>7.0} ns  ratio {:.2}x (goal <= 2x)",
        ops_get / base_get
    );
    println!(
        "insert:       {ops_insert:>9.0} ns vs {base_insert:>7.0} ns  ratio {:.2}x (goal <= 3x)",
        ops_insert / base_insert
    );
    println!("  of which entity -> document tree {serialize:.0} ns, schema check {validate:.0} ns");
    println!(
        "indexed find: {:>9.0} us vs scan {:>7.0} us  speed-up {:.0}x (goal >= 100x)",
        indexed / 1e3,
        scan / 1e3,
        scan / indexed
    );
}

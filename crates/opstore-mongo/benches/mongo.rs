//! opstore-mongo against the raw `mongodb` driver with typed collections, on the
//! server named by `OPSTORE_MONGODB_URL` (`cargo xtask bench mongo` starts one).
//! Prints one line per operation with the opstore/raw time ratio.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::doc;
use opstore_domain::{Filter, Query, Repository, Store, StoreExt, Update};
use opstore_mongo::{MongoConfig, MongoStore};
use opstore_testkit::fixtures::{self, Item, item};
use serde::{Deserialize, Serialize};

/// The raw driver's typed document: the entity with `_id` = its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawItem {
    #[serde(rename = "_id")]
    key: String,
    #[serde(flatten)]
    item: Item,
}

const ROUNDS: usize = 300;

fn per_op(d: Duration, n: usize) -> Duration {
    d / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

fn report(name: &str, ours: Duration, raw: Duration) {
    let ratio = ours.as_secs_f64() / raw.as_secs_f64().max(1e-9);
    println!("mongo {name:<28} opstore {ours:>10.2?}  raw {raw:>10.2?}  opstore/raw {ratio:.3}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url) = std::env::var("OPSTORE_MONGODB_URL") else {
        println!(
            "SKIP mongo bench: OPSTORE_MONGODB_URL is not set (run `cargo xtask bench mongo`)"
        );
        return;
    };
    let database = format!("bench_{}", std::process::id());
    let store = MongoStore::connect(MongoConfig::new(url, database))
        .await
        .expect("connect");
    store.migrate(&fixtures::schemas()).await.expect("migrate");
    let repo = store.repository::<Item>().expect("repository");
    let raw_db = store.database().clone();
    raw_db
        .collection::<RawItem>("raw_items")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1 })
                .build(),
        )
        .await
        .expect("raw index");
    let raw = raw_db.collection::<RawItem>("raw_items");
    let name_of = |i: usize| format!("group-{}", i % 6);

    // Warm both paths (connections, server caches) before timing anything.
    for i in 0..50 {
        repo.insert(&item(&format!("w{i}")).build())
            .await
            .expect("warm insert");
        let it = item(&format!("w{i}")).build();
        raw.insert_one(RawItem {
            key: it.id.clone(),
            item: it,
        })
        .await
        .expect("warm raw insert");
    }

    // Insert one.
    let start = Instant::now();
    for i in 0..ROUNDS {
        repo.insert(&item(&format!("o{i}")).name(&name_of(i)).build())
            .await
            .expect("insert");
    }
    let ours = per_op(start.elapsed(), ROUNDS);
    let start = Instant::now();
    for i in 0..ROUNDS {
        let it = item(&format!("o{i}")).name(&name_of(i)).build();
        raw.insert_one(RawItem {
            key: it.id.clone(),
            item: it,
        })
        .await
        .expect("raw insert");
    }
    report("insert one", ours, per_op(start.elapsed(), ROUNDS));

    // Get by id.
    let start = Instant::now();
    for i in 0..ROUNDS {
        repo.get(&format!("o{i}"))
            .await
            .expect("get")
            .expect("present");
    }
    let ours = per_op(start.elapsed(), ROUNDS);
    let start = Instant::now();
    for i in 0..ROUNDS {
        raw.find_one(doc! { "_id": format!("o{i}") })
            .await
            .expect("raw get")
            .expect("present");
    }
    report("get by id", ours, per_op(start.elapsed(), ROUNDS));

    // Indexed find, limit 50.
    let q = |i: usize| Query::filter(Filter::eq("name", name_of(i))).limit(50);
    let start = Instant::now();
    for i in 0..50 {
        assert_eq!(repo.find(&q(i)).await.expect("find").len(), 50);
    }
    let ours = per_op(start.elapsed(), 50);
    let start = Instant::now();
    for i in 0..50 {
        let docs: Vec<RawItem> = raw
            .find(doc! { "name": name_of(i) })
            .sort(doc! { "_id": 1 })
            .limit(50)
            .await
            .expect("raw find")
            .try_collect()
            .await
            .expect("raw cursor");
        assert_eq!(docs.len(), 50);
    }
    report("indexed find limit 50", ours, per_op(start.elapsed(), 50));

    // update_many of 1k documents.
    let batch: Vec<Item> = (0..1000)
        .map(|i| item(&format!("u{i}")).name("bulk").build())
        .collect();
    repo.insert_many(&batch).await.expect("insert_many");
    let raw_batch: Vec<RawItem> = batch
        .iter()
        .map(|it| RawItem {
            key: it.id.clone(),
            item: it.clone(),
        })
        .collect();
    raw.insert_many(raw_batch).await.expect("raw insert_many");
    let start = Instant::now();
    for n in 1..=5 {
        let c = repo
            .update_many(&Filter::eq("name", "bulk"), &Update::new().set("count", n))
            .await
            .expect("update");
        assert_eq!(c.matched, 1000);
    }
    let ours = per_op(start.elapsed(), 5);
    let start = Instant::now();
    for n in 1..=5_i64 {
        let r = raw
            .update_many(doc! { "name": "bulk" }, doc! { "$set": { "count": n } })
            .await
            .expect("raw update");
        assert_eq!(r.matched_count, 1000);
    }
    report("update_many 1k", ours, per_op(start.elapsed(), 5));

    // insert_many 10k against single inserts (per document).
    let many: Vec<Item> = (0..10_000)
        .map(|i| item(&format!("m{i}")).build())
        .collect();
    let start = Instant::now();
    repo.insert_many(&many).await.expect("insert_many 10k");
    let batched = per_op(start.elapsed(), many.len());
    let singles = 1000;
    let start = Instant::now();
    for i in 0..singles {
        repo.insert(&item(&format!("s{i}")).build())
            .await
            .expect("single insert");
    }
    let single = per_op(start.elapsed(), singles);
    let speedup = single.as_secs_f64() / batched.as_secs_f64().max(1e-9);
    println!(
        "mongo insert_many 10k per doc      {batched:>10.2?}  single insert per doc {single:>10.2?}  speedup {speedup:.1}x"
    );

    store.database().drop().await.expect("drop bench database");
    store.close().await;
}

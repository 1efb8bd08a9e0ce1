//! Adapter vs raw driver: insert throughput at concurrency 256 and get-by-key
//! latency, with the same prepared statements. Needs `OPSTORE_SCYLLA_URL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use opstore_domain::{Collection, Field, FieldType, Schema, Store, json};
use opstore_scylla::{DriverSession, ScyllaConfig, ScyllaStore};
use std::sync::LazyLock;

static ROWS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("bench_rows", "id")
        .field(Field::new("n", FieldType::Int))
        .build()
});

const N: usize = 20_000;
const CONCURRENCY: usize = 256;

fn main() {
    let Ok(url) = std::env::var("OPSTORE_SCYLLA_URL") else {
        println!("no server: OPSTORE_SCYLLA_URL not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut config = ScyllaConfig::from_url(&url).expect("url");
        config.keyspace = "opstore_bench".into();
        let store = ScyllaStore::connect(config.clone()).await.expect("connect");
        store.migrate(&[&ROWS]).await.expect("migrate");
        let items: Arc<dyn Collection> = store.collection(&ROWS).expect("collection");
        let raw = DriverSession::connect(&config).await.expect("raw connect");
        let insert = raw
            .raw()
            .prepare("INSERT INTO opstore_bench.bench_rows (\"id\", \"n\", doc, last_op) VALUES (?, ?, ?, 'insert') IF NOT EXISTS")
            .await
            .expect("prepare");
        let get = raw
            .raw()
            .prepare("SELECT \"id\", \"n\", doc FROM opstore_bench.bench_rows WHERE \"id\" = ?")
            .await
            .expect("prepare");

        let t = Instant::now();
        futures::stream::iter(0..N)
            .map(|i| {
                let items = Arc::clone(&items);
                async move { items.insert(json!({"id": format!("a{i}"), "n": i})).await.expect("insert") }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let adapter = N as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        futures::stream::iter(0..N)
            .map(|i| {
                let (s, p) = (raw.raw(), &insert);
                async move {
                    let doc = json!({"id": format!("r{i}"), "n": i}).to_string();
                    s.execute_unpaged(p, (format!("r{i}"), i as i64, doc)).await.expect("raw insert");
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let rawr = N as f64 / t.elapsed().as_secs_f64();
        println!("insert c=256: adapter {adapter:.0}/s raw {rawr:.0}/s ratio {:.3} (target >= 0.95)", adapter / rawr);

        let mut a = Duration::ZERO;
        let mut r = Duration::ZERO;
        for i in 0..2000 {
            let t = Instant::now();
            items.get(&format!("a{i}")).await.expect("get");
            a += t.elapsed();
            let t = Instant::now();
            raw.raw().execute_unpaged(&get, (format!("r{i}"),)).await.expect("raw get");
            r += t.elapsed();
        }
        println!("get by key: adapter {:?} raw {:?} ratio {:.3} (target <= 1.05)", a / 2000, r / 2000, a.as_secs_f64() / r.as_secs_f64());
        store.close().await;
    });
}

//! The ScyllaDB adapter's benchmark scenarios against the raw driver with the
//! same prepared statements (feature `bench`): insert throughput at concurrency
//! 256 (goal >= 0.95x raw) and get-by-key latency (goal <= 1.05x raw).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opstore_domain::{Collection, Field, FieldType, Schema, Store, json};
use opstore_testkit::bench::{BenchError, BenchResult, Better, Figure, Goal, Scale};

use crate::{DriverSession, ScyllaConfig, ScyllaStore};

const GROUP: &str = "scylla";
const BASELINE: &str = "raw scylla driver";
const CONCURRENCY: usize = 256;

static ROWS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("bench_rows", "id")
        .field(Field::new("n", FieldType::Int))
        .build()
});

/// The server's flavour and release, as `health` reports them.
pub async fn server_version(url: &str) -> BenchResult<String> {
    let store = ScyllaStore::connect(ScyllaConfig::from_url(url)?).await?;
    let server = store.health().await?.server;
    store.close().await;
    Ok(server)
}

/// Runs every ScyllaDB scenario on the server at `url` (a `scylla://` URL), in
/// the keyspace `opstore_bench`, and returns its figures.
pub async fn run(url: &str, scale: Scale) -> BenchResult<Vec<Figure>> {
    let n = scale.pick(20_000, 5_000, 500);
    let gets = scale.pick(2_000, 500, 50);
    let mut config = ScyllaConfig::from_url(url)?;
    config.keyspace = "opstore_bench".into();
    let store = ScyllaStore::connect(config.clone()).await?;
    store.migrate(&[&ROWS]).await?;
    let items: Arc<dyn Collection> = store.collection(&ROWS)?;
    let raw = DriverSession::connect(&config).await?;
    let insert = raw
        .raw()
        .prepare("INSERT INTO opstore_bench.bench_rows (\"id\", \"n\", doc, last_op) VALUES (?, ?, ?, 'insert') IF NOT EXISTS")
        .await?;
    let get = raw
        .raw()
        .prepare("SELECT \"id\", \"n\", doc FROM opstore_bench.bench_rows WHERE \"id\" = ?")
        .await?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();

    // Warm both paths first: a JVM server (Cassandra) speeds up for minutes after
    // its start, which would otherwise favour whichever side runs second.
    let warm = scale.pick(4_000, 1_000, 100);
    let warmed: Vec<_> = futures::stream::iter(0..warm)
        .map(|i| {
            let (items, s, p) = (Arc::clone(&items), raw.raw(), &insert);
            async move {
                items
                    .insert(json!({"id": format!("wa{run}-{i}"), "n": i}))
                    .await?;
                let doc = json!({"id": format!("wr{run}-{i}"), "n": i}).to_string();
                s.execute_unpaged(p, (format!("wr{run}-{i}"), i as i64, doc))
                    .await
                    .map_err(|e| BenchError::msg(format!("warm-up insert: {e}")))?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    warmed.into_iter().collect::<Result<Vec<_>, _>>()?;

    let t = Instant::now();
    let inserted: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let items = Arc::clone(&items);
            async move {
                items
                    .insert(json!({"id": format!("a{run}-{i}"), "n": i}))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    inserted.into_iter().collect::<Result<Vec<_>, _>>()?;
    let adapter = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let inserted: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let (s, p) = (raw.raw(), &insert);
            async move {
                let doc = json!({"id": format!("r{run}-{i}"), "n": i}).to_string();
                s.execute_unpaged(p, (format!("r{run}-{i}"), i as i64, doc))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    inserted.into_iter().collect::<Result<Vec<_>, _>>()?;
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();

    let mut a = Duration::ZERO;
    let mut r = Duration::ZERO;
    for i in 0..gets {
        let t = Instant::now();
        items.get(&format!("a{run}-{i}")).await?;
        a += t.elapsed();
        let t = Instant::now();
        raw.raw()
            .execute_unpaged(&get, (format!("r{run}-{i}"),))
            .await?;
        r += t.elapsed();
    }
    store.close().await;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / gets as f64;
    Ok(vec![
        Figure::new(
            GROUP,
            "insert at concurrency 256",
            "rows/s",
            adapter,
            BASELINE,
            raw_rate,
        )
        .goal(Goal::ratio(Better::Higher, 0.95))
        .detail(format!("{n} rows per side")),
        Figure::new(GROUP, "get by key", "us/op", per(a), BASELINE, per(r))
            .goal(Goal::ratio(Better::Lower, 1.05))
            .detail(format!("{gets} gets per side, alternating")),
    ])
}

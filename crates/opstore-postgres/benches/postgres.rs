//! opstore on PostgreSQL against hand-written sqlx on the same tables, in one run
//! on the server named by `OPSTORE_POSTGRES_URL` (`cargo xtask bench postgres`).
//!
//! Prints, per operation, the time per call of each side and the ratio
//! opstore / hand-written (lower is better; the goal is <= 1.05), then the
//! change-feed insert-to-delivery latency at about 2k events/s.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opstore_domain::{
    Entity, Filter, LockManager, Query, Repository, StartAt, Store, StoreExt, Update, WatchRequest,
};
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::fixtures::{self, Item, item};
use sqlx::{PgPool, Row};

/// Rounds each measurement is split into, alternating the two sides so drift in
/// the server (autovacuum, checkpoints) hits both alike.
const ROUNDS: usize = 5;

fn doc(prefix: &str, i: usize) -> Item {
    item(&format!("{prefix}{i:07}"))
        .name(&format!("grp-{}", i % 10))
        .count(i as i64)
        .build()
}

struct Pair {
    name: &'static str,
    ours: Duration,
    raw: Duration,
    calls: usize,
}

impl Pair {
    fn print(&self) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.calls as f64;
        println!(
            "{:<28} opstore {:>10.1} us  hand-written {:>10.1} us  ratio {:.3}",
            self.name,
            per(self.ours),
            per(self.raw),
            self.ours.as_secs_f64() / self.raw.as_secs_f64()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let url = std::env::var("OPSTORE_POSTGRES_URL").expect(
        "OPSTORE_POSTGRES_URL must name a PostgreSQL server (cargo xtask bench postgres sets it)",
    );
    let mut config = PgConfig::from_url(url);
    config.schema = Some(format!("bench_{}", uuid::Uuid::new_v4().simple()));
    config.max_connections = 8;
    config.feed_poll_interval = Duration::from_millis(100);
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate(&fixtures::schemas()).await.expect("migrate");
    let pool = store.pool().clone();
    let repo = store.repository::<Item>().expect("repository");
    let mut results = Vec::new();

    // Insert one.
    let n = 400;
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..n {
            let d = doc(&format!("raw{r}-"), i);
            let text = serde_json::to_string(&d).expect("encode");
            sqlx::query("INSERT INTO items (doc) VALUES ($1::jsonb)")
                .bind(text)
                .execute(&pool)
                .await
                .expect("raw insert");
        }
        raw += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            repo.insert(&doc(&format!("ops{r}-"), i))
                .await
                .expect("insert");
        }
        ours += t.elapsed();
    }
    results.push(Pair {
        name: "insert one",
        ours,
        raw,
        calls: n * ROUNDS,
    });

    // Get by id.
    let n = 1000;
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..n {
            let row = sqlx::query("SELECT doc FROM items WHERE \"id\" = $1")
                .bind(format!("raw{r}-{:07}", i % 400))
                .fetch_optional(&pool)
                .await
                .expect("raw get");
            let item: Option<Item> = row.map(|r| serde_json::from_value(r.get(0)).expect("decode"));
            black_box(item);
        }
        raw += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            black_box(
                repo.get(&format!("ops{r}-{:07}", i % 400))
                    .await
                    .expect("get"),
            );
        }
        ours += t.elapsed();
    }
    results.push(Pair {
        name: "get by id",
        ours,
        raw,
        calls: n * ROUNDS,
    });

    // Bulk rows for finds and updates: 10 groups of 1k.
    let bulk: Vec<Item> = (0..10_000).map(|i| doc("bulk", i)).collect();
    repo.insert_many(&bulk).await.expect("bulk insert");
    sqlx::query("ANALYZE items")
        .execute(&pool)
        .await
        .expect("analyze");

    // Indexed find, limit 50.
    let n = 300;
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..n {
            let rows =
                sqlx::query("SELECT doc FROM items WHERE \"name\" = $1 ORDER BY \"id\" LIMIT 50")
                    .bind(format!("grp-{}", i % 10))
                    .fetch_all(&pool)
                    .await
                    .expect("raw find");
            let items: Vec<Item> = rows
                .into_iter()
                .map(|r| serde_json::from_value(r.get(0)).expect("decode"))
                .collect();
            black_box(items);
        }
        raw += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let q = Query::filter(Filter::eq("name", format!("grp-{}", i % 10))).limit(50);
            black_box(repo.find(&q).await.expect("find"));
        }
        ours += t.elapsed();
    }
    results.push(Pair {
        name: "indexed find (limit 50)",
        ours,
        raw,
        calls: n * ROUNDS,
    });

    // update_many of 1k rows.
    let n = 4;
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..n {
            sqlx::query("UPDATE items SET doc = doc || jsonb_build_object('note', $2::text) WHERE \"name\" = $1")
                .bind(format!("grp-{}", i % 10))
                .bind(format!("raw-{r}-{i}"))
                .execute(&pool)
                .await
                .expect("raw update");
        }
        raw += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let f = Filter::eq("name", format!("grp-{}", i % 10));
            let c = repo
                .update_many(&f, &Update::new().set("note", format!("ops-{r}-{i}")))
                .await
                .expect("update_many");
            black_box(c);
        }
        ours += t.elapsed();
    }
    results.push(Pair {
        name: "update_many (1k rows)",
        ours,
        raw,
        calls: n * ROUNDS,
    });

    // insert_many of 10k rows against one hand-written UNNEST insert.
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let raw_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-raw{r}-"), i))
            .collect();
        let our_docs: Vec<Item> = (0..10_000)
            .map(|i| doc(&format!("many-ops{r}-"), i))
            .collect();
        let t = Instant::now();
        let texts: Vec<String> = raw_docs
            .iter()
            .map(|d| serde_json::to_string(d).expect("encode"))
            .collect();
        sqlx::query("INSERT INTO items (doc) SELECT d::jsonb FROM unnest($1::text[]) AS d")
            .bind(texts)
            .execute(&pool)
            .await
            .expect("raw unnest");
        raw += t.elapsed();
        let t = Instant::now();
        repo.insert_many(&our_docs).await.expect("insert_many");
        ours += t.elapsed();
    }
    results.push(Pair {
        name: "insert_many (10k rows)",
        ours,
        raw,
        calls: ROUNDS,
    });
    let rows_per_s = 10_000.0 * ROUNDS as f64 / ours.as_secs_f64();

    // Lease acquire + release.
    let locks = store.locks();
    let n = 300;
    let (mut ours, mut raw, mut adv) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut conn = pool.acquire().await.expect("connection");
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..n {
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
            .await
            .expect("raw acquire");
            sqlx::query("DELETE FROM opstore_leases WHERE name = $1 AND owner = $2")
                .bind(&name)
                .bind("bench")
                .execute(&pool)
                .await
                .expect("raw release");
        }
        raw += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let lease = locks
                .try_acquire(
                    &format!("ops-{r}-{}", i % 20),
                    "bench",
                    Duration::from_secs(30),
                )
                .await;
            let lease = lease.expect("acquire").expect("free");
            locks.release(&lease).await.expect("release");
        }
        ours += t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let key = (r * 1000 + i % 20) as i64;
            sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await
                .expect("advisory");
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await
                .expect("unlock");
        }
        adv += t.elapsed();
    }
    drop(conn);
    results.push(Pair {
        name: "lease acquire+release",
        ours,
        raw,
        calls: n * ROUNDS,
    });
    let advisory_ratio = ours.as_secs_f64() / adv.as_secs_f64();

    for r in &results {
        r.print();
    }
    println!("insert_many throughput: {rows_per_s:.0} rows/s");
    println!(
        "lease acquire+release vs pg_try_advisory_lock+unlock: {advisory_ratio:.2}x (advisory {:.1} us)",
        adv.as_secs_f64() * 1e6 / (n * ROUNDS) as f64
    );

    feed_latency(&store, &repo).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        store.config().schema_name()
    )))
    .execute(&pool)
    .await;
}

/// Insert-to-delivery latency of the change feed at about 2k events/s.
async fn feed_latency(store: &PgStore, repo: &impl Repository<Item>) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Now,
            filter: None,
        })
        .await
        .expect("watch");
    let total = 8_000;
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let sent = Arc::clone(&sent);
            let repo = store.repository::<Item>().expect("repository");
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                for i in 0..total / 2 {
                    tick.tick().await;
                    let key = format!("feed{p}-{i:07}");
                    sent.lock()
                        .expect("sent map")
                        .insert(key.clone(), Instant::now());
                    repo.insert(&item(&key).build()).await.expect("feed insert");
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let started = Instant::now();
    while latencies.len() < total {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("feed stalled")
            .expect("stream ended")
            .expect("feed error");
        let now = Instant::now();
        if let Some(at) = sent.lock().expect("sent map").remove(&event.key) {
            latencies.push(now - at);
        }
    }
    let elapsed = started.elapsed();
    for p in producers {
        p.await.expect("producer");
    }
    let _ = repo;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "change feed at {:.0} events/s: p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}

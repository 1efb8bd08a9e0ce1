//! Lease holders paused past their TTL, and contended acquisitions: a stale
//! holder's fenced write is rejected, and no two holders ever own the lease at
//! once.
//!
//! A fenced write is a transaction that runs `Transaction::check_fence` and then
//! writes. Ownership is measured on the storage side: every fenced write bumps a
//! sequence on one resource document and appends a log entry with its lease's
//! fencing token, so the log is the commit order. A token's ownership interval
//! runs from its first to its last logged write; two intervals that overlap, or
//! a write whose token is below one already logged, is double ownership.

mod fault_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use fault_support::{HANG_GUARD, require_server, unique};
use opstore_domain::{
    Field, FieldType, Filter, Lease, ManualClock, Query, Schema, Store, StoreError, Timestamp,
    TxOptions, Update, json, run_transaction,
};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_postgres::{PgConfig, PgStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The guarded resource and the log of fenced writes.
static LEDGER: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("fault_ledger", "id")
        .field(Field::new("role", FieldType::String).indexed())
        .field(Field::new("fence", FieldType::Int))
        .field(Field::new("seq", FieldType::Int).indexed())
        .field(Field::new("phase", FieldType::String).optional())
        .field(Field::new("violations", FieldType::Int).optional())
        .build()
});

const RESOURCE: &str = "resource";

/// How a paused holder's pause is made.
#[derive(Clone)]
enum Pause {
    /// Moves the store's manual clock past the TTL.
    Clock(ManualClock),
    /// Really waits past the TTL (the backend judges expiry by its own clock).
    Sleep,
}

impl Pause {
    async fn past(&self, ttl: Duration) {
        match self {
            Pause::Clock(clock) => clock.advance(ttl + Duration::from_secs(1)),
            Pause::Sleep => tokio::time::sleep(ttl + Duration::from_millis(100)).await,
        }
    }
}

async fn migrate(store: &dyn Store) {
    store.migrate(&[&LEDGER]).await.unwrap();
    store
        .collection(&LEDGER)
        .unwrap()
        .insert(json!({"id": RESOURCE, "role": "resource", "fence": 0, "seq": 0, "violations": 0}))
        .await
        .unwrap();
}

/// Writes under `lease`: fails with `LockLost` unless the lease is live. Records
/// a violation when a larger token already wrote.
async fn fenced_write(
    store: &dyn Store,
    lease: &Lease,
    phase: &'static str,
) -> Result<(), StoreError> {
    let lease = lease.clone();
    let options = TxOptions {
        max_retries: 50,
        ..TxOptions::default()
    };
    run_transaction(store, options, move |tx| {
        let lease = lease.clone();
        async move {
            tx.check_fence(&lease).await?;
            let ledger = tx.collection(&LEDGER)?;
            let resource = ledger
                .get_for_update(RESOURCE)
                .await?
                .expect("the resource document exists");
            let fence = resource["fence"].as_i64().unwrap();
            let seq = resource["seq"].as_i64().unwrap() + 1;
            let token = i64::try_from(lease.token()).unwrap();
            let mut update = Update::new().set("seq", seq).set("fence", fence.max(token));
            if token < fence {
                update = update.inc("violations", 1);
            }
            ledger.update_one(RESOURCE, &update).await?;
            ledger
                .insert(json!({
                    "id": format!("log-{seq:07}"),
                    "role": "log",
                    "fence": token,
                    "seq": seq,
                    "phase": phase,
                }))
                .await?;
            Ok(())
        }
    })
    .await
}

/// A holder paused past its TTL loses the lease to another owner, and its later
/// fenced write, renew and release are all refused.
async fn paused_holder_is_fenced_off(store: Arc<dyn Store>, pause: Pause, ttl: Duration) {
    migrate(&*store).await;
    let locks = store.locks();
    let name = unique("job");
    let a = locks
        .try_acquire(&name, "holder-a", ttl)
        .await
        .unwrap()
        .unwrap();
    fenced_write(&*store, &a, "before-pause").await.unwrap();

    pause.past(ttl).await;
    // The other owner polls until the backend, by its clock, lets it take over.
    let b = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Some(b) = locks
                .try_acquire(&name, "holder-b", ttl * 20)
                .await
                .unwrap()
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the expired lease is taken over");
    assert!(
        b.token() > a.token(),
        "takeover token {} after {}",
        b.token(),
        a.token()
    );

    let stale = fenced_write(&*store, &a, "after-pause").await;
    assert!(matches!(stale, Err(StoreError::LockLost(_))), "{stale:?}");
    assert!(locks.renew(&a, ttl).await.unwrap_err().is_lock_lost());
    assert!(locks.release(&a).await.unwrap_err().is_lock_lost());
    fenced_write(&*store, &b, "new-holder").await.unwrap();

    let log = ledger_log(&*store).await;
    let phases: Vec<(&str, i64)> = log
        .iter()
        .map(|d| (d["phase"].as_str().unwrap(), d["fence"].as_i64().unwrap()))
        .collect();
    let (ta, tb) = (
        i64::try_from(a.token()).unwrap(),
        i64::try_from(b.token()).unwrap(),
    );
    assert_eq!(phases, vec![("before-pause", ta), ("new-holder", tb)]);
    println!(
        "FIGURES fault_lease paused_holder backend={} ttl={ttl:?} stale_token={ta} takeover_token={tb} stale_write=rejected renew=LockLost release=LockLost",
        store.backend()
    );
}

async fn ledger_log(store: &dyn Store) -> Vec<opstore_domain::Value> {
    store
        .collection(&LEDGER)
        .unwrap()
        .find(&Query::filter(Filter::eq("role", "log")).sort_asc("seq"))
        .await
        .unwrap()
}

#[derive(Debug, Default)]
struct Contention {
    acquisitions: u64,
    failed_attempts: u64,
    pauses: u64,
    stale_writes_rejected: u64,
    releases_refused: u64,
    logged_writes: usize,
    overlapping_intervals: usize,
    tokens_out_of_order: usize,
    server_violations: i64,
}

/// `workers` owners compete for one lease until `total` acquisitions happened.
/// Each holder writes on entry and on exit; a seeded few pause past the TTL in
/// between, so others take over and the paused holder's exit write is stale.
async fn contend(
    store: Arc<dyn Store>,
    pause: Pause,
    ttl: Duration,
    workers: usize,
    total: u64,
    pause_every: u64,
) -> Contention {
    migrate(&*store).await;
    let name = unique("contended");
    let acquired = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Contention::default()));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, pause, name) = (Arc::clone(&store), pause.clone(), name.clone());
        let (acquired, stats, tokens) = (
            Arc::clone(&acquired),
            Arc::clone(&stats),
            Arc::clone(&tokens),
        );
        tasks.push(tokio::spawn(async move {
            let locks = store.locks();
            let owner = format!("worker-{w}");
            let mut rng = StdRng::seed_from_u64(0x1ea5e + w as u64);
            loop {
                if acquired.load(Ordering::SeqCst) >= total {
                    return;
                }
                let Some(lease) = locks.try_acquire(&name, &owner, ttl).await.unwrap() else {
                    stats.lock().unwrap().failed_attempts += 1;
                    if matches!(pause, Pause::Sleep) {
                        // Paces the other owners' polling of a real server.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                };
                if acquired.fetch_add(1, Ordering::SeqCst) >= total {
                    let _ = locks.release(&lease).await;
                    return;
                }
                tokens.lock().unwrap().push(lease.token());
                let mut rejected = 0;
                for phase in ["enter", "exit"] {
                    if phase == "exit" && rng.random_range(0..pause_every) == 0 {
                        stats.lock().unwrap().pauses += 1;
                        pause.past(ttl).await;
                    }
                    match fenced_write(&*store, &lease, phase).await {
                        Ok(()) => {}
                        Err(StoreError::LockLost(_)) => rejected += 1,
                        Err(e) => panic!("fenced write of {owner}: {e}"),
                    }
                }
                let refused = match locks.release(&lease).await {
                    Ok(()) => false,
                    Err(StoreError::LockLost(_)) => true,
                    Err(e) => panic!("release by {owner}: {e}"),
                };
                let mut s = stats.lock().unwrap();
                s.stale_writes_rejected += rejected;
                s.releases_refused += u64::from(refused);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(HANG_GUARD * 3, task)
            .await
            .expect("workers finish")
            .unwrap();
    }

    let mut s = std::mem::take(&mut *stats.lock().unwrap());
    s.acquisitions = total;
    let mut tokens = std::mem::take(&mut *tokens.lock().unwrap());
    let n = tokens.len();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        n,
        "every acquisition has its own fencing token"
    );
    assert_eq!(n as u64, total);

    let log = ledger_log(&*store).await;
    s.logged_writes = log.len();
    let fences: Vec<i64> = log.iter().map(|d| d["fence"].as_i64().unwrap()).collect();
    s.tokens_out_of_order = fences.windows(2).filter(|w| w[1] < w[0]).count();
    // Ownership interval of each token in commit order: first and last write.
    let mut intervals: Vec<(i64, usize, usize)> = Vec::new();
    for (i, &fence) in fences.iter().enumerate() {
        match intervals.iter_mut().find(|iv| iv.0 == fence) {
            Some(iv) => iv.2 = i,
            None => intervals.push((fence, i, i)),
        }
    }
    intervals.sort_by_key(|iv| iv.1);
    let mut owned_until = None;
    for &(_, start, end) in &intervals {
        if owned_until.is_some_and(|until| start < until) {
            s.overlapping_intervals += 1;
        }
        owned_until = owned_until.max(Some(end));
    }
    let resource = store
        .collection(&LEDGER)
        .unwrap()
        .get(RESOURCE)
        .await
        .unwrap()
        .unwrap();
    s.server_violations = resource["violations"].as_i64().unwrap();
    println!(
        "FIGURES fault_lease contention backend={} workers={workers} ttl={ttl:?} {s:?}",
        store.backend()
    );
    s
}

fn assert_single_owner(s: &Contention) {
    assert_eq!(s.overlapping_intervals, 0, "double ownership: {s:?}");
    assert_eq!(
        s.tokens_out_of_order, 0,
        "stale write after a newer one: {s:?}"
    );
    assert_eq!(s.server_violations, 0, "{s:?}");
    // Every paused holder's exit write was stale, and nothing else was lost.
    assert!(s.stale_writes_rejected >= s.pauses, "{s:?}");
    assert_eq!(
        s.logged_writes as u64 + s.stale_writes_rejected,
        2 * s.acquisitions,
        "{s:?}"
    );
}

fn memory_with_clock() -> (Arc<dyn Store>, ManualClock) {
    let clock = ManualClock::new(Timestamp::now());
    let config = MemoryConfig {
        clock: Arc::new(clock.clone()),
        ..MemoryConfig::default()
    };
    (Arc::new(MemoryStore::new(config)), clock)
}

async fn postgres() -> Option<Arc<dyn Store>> {
    let url = require_server("postgres", "OPSTORE_POSTGRES_URL")?;
    let mut config = PgConfig::from_url(url);
    config.schema = Some(unique("lease"));
    config.max_connections = 12;
    Some(Arc::new(PgStore::connect(config).await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_is_fenced_off_on_memory() {
    let (store, clock) = memory_with_clock();
    paused_holder_is_fenced_off(store, Pause::Clock(clock), Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_is_fenced_off_on_postgres() {
    let Some(store) = postgres().await else {
        return;
    };
    paused_holder_is_fenced_off(store, Pause::Sleep, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_is_fenced_off_on_mongo() {
    let Some(url) = require_server("mongo", "OPSTORE_MONGODB_URL") else {
        return;
    };
    let clock = ManualClock::new(Timestamp::now());
    let mut config = MongoConfig::new(url, unique("lease"));
    config.clock = ExpiryClock::Manual(clock.clone());
    let store: Arc<dyn Store> = Arc::new(MongoStore::connect(config).await.unwrap());
    paused_holder_is_fenced_off(store, Pause::Clock(clock), Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_lease_has_one_owner_on_memory() {
    let (store, clock) = memory_with_clock();
    let s = contend(
        store,
        Pause::Clock(clock),
        Duration::from_secs(30),
        8,
        1000,
        50,
    )
    .await;
    assert_single_owner(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_lease_has_one_owner_on_postgres() {
    let Some(store) = postgres().await else {
        return;
    };
    let s = contend(
        store,
        Pause::Sleep,
        Duration::from_millis(500),
        8,
        1000,
        150,
    )
    .await;
    assert_single_owner(&s);
}

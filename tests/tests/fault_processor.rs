//! Event processors killed at random points and restarted from their
//! checkpoints: nothing is lost, redeliveries only reach events after the saved
//! checkpoint, and an idempotency guard makes the handler's effect exactly-once.
//!
//! Each cycle writes a few events, starts the processor, and aborts its task at
//! a seeded random point: at a handler call's entry, after the idempotency
//! `begin`, after the effect committed, or just after the handler returned (the
//! abort then lands somewhere in the processor's own code, e.g. around a
//! checkpoint write). The handler parks at the chosen point until the abort, so
//! the kill happens exactly there. `OPSTORE_FAULT_SEED` replays a run.
//!
//! The effect is a non-idempotent counter increment. `IdempotencyStore` turns
//! redelivered, already completed events into no-ops; a kill between the effect
//! and `complete` leaves the key `InProgress`, and that window is closed by
//! committing the increment in one transaction with a per-event marker.

mod fault_support;

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fault_support::{HANG_GUARD, require_server, unique};
use opstore_app::processor::{
    CheckpointPolicy, EventHandler, EventProcessor, FailureMode, HandlerError, PartitionKey,
    ProcessorConfig, ProcessorPorts, QueueConfig, QueueEventProcessor, RetryPolicy, StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    Agg, Begin, ChangeEvent, CheckpointStore, Entity, Field, FieldType, Filter, IdempotencyStore,
    Repository, ResumeToken, Schema, Store, StoreExt, TxOptions, Update, json, run_transaction,
};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_postgres::{PgConfig, PgStore};
use opstore_sqlite::{SqliteConfig, SqliteStore};
use opstore_testkit::fixtures::{Item, item};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Counters per partition and one marker per applied event.
static EFFECTS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("fault_effects", "id")
        .field(Field::new("role", FieldType::String).indexed())
        .field(Field::new("count", FieldType::Int))
        .build()
});

/// Partitions (item names) the events are spread over.
const PARTITIONS: usize = 4;
/// Events written per kill cycle; the kill lands within this many handler calls.
const EVENTS_PER_CYCLE: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Queue,
}

/// Where in a handler call the kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Entry = 0,
    AfterBegin = 1,
    AfterEffect = 2,
    Returned = 3,
}

const PHASES: [Phase; 4] = [
    Phase::Entry,
    Phase::AfterBegin,
    Phase::AfterEffect,
    Phase::Returned,
];

/// The kill point of the current incarnation: the first handler position at or
/// after `(call, phase)`.
///
/// Aborting a task takes effect at its next suspension, so a worker of a killed
/// incarnation may still be running on another thread. Every handler call
/// knows its incarnation and parks at its next point once that incarnation is
/// dead, and the next incarnation starts only when every call of the killed one
/// was dropped: like a killed process, the old one does nothing more.
#[derive(Default)]
struct KillSwitch {
    target: Mutex<Option<(u32, Phase)>>,
    fired: AtomicBool,
    calls: AtomicU32,
    notify: Notify,
    /// The running incarnation.
    current: AtomicU32,
    /// Incarnations below this are dead.
    alive_from: AtomicU32,
    /// Handler calls not yet returned or dropped.
    active: AtomicU32,
    idle: Notify,
}

/// Counts a handler call as active until it returns or its task is dropped.
struct ActiveCall<'a>(&'a KillSwitch);

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl KillSwitch {
    /// Waits until no handler call of a killed incarnation is left.
    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// What the handler saw.
#[derive(Default)]
struct Seen {
    /// Successful handler completions per key: the incarnations they happened in.
    completions: HashMap<String, Vec<u32>>,
    tokens: HashMap<ResumeToken, String>,
    guard_skips: u64,
    in_progress_takeovers: u64,
    effect_replays_blocked: u64,
    effects_applied: u64,
    /// Deliveries of an event at or before the checkpoint the incarnation
    /// started from: never allowed.
    behind_checkpoint: u64,
    /// Insertion index of the checkpoint's event at the incarnation's start.
    checkpoint_index: Option<usize>,
}

struct Guarded {
    store: Arc<dyn Store>,
    idempotency: Arc<dyn IdempotencyStore>,
    run: String,
    index: Arc<Mutex<HashMap<String, usize>>>,
    seen: Arc<Mutex<Seen>>,
    kill: Arc<KillSwitch>,
    done: watch::Sender<usize>,
}

impl Guarded {
    /// Parks forever at the kill point (the test aborts the task meanwhile),
    /// except after the handler returned, where the processor goes on until the
    /// abort lands.
    async fn point(&self, incarnation: u32, call: u32, phase: Phase) {
        if incarnation < self.kill.alive_from.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let target = *self.kill.target.lock().unwrap();
        let Some(target) = target else { return };
        if (call, phase) < target || self.kill.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        self.kill.notify.notify_one();
        if phase != Phase::Returned {
            std::future::pending::<()>().await;
        }
    }

    async fn apply_effect(&self, key: &str, partition: String) -> Result<bool, HandlerError> {
        let marker = format!("m-{key}");
        let counter = format!("c-{partition}");
        let applied = run_transaction(&*self.store, TxOptions::default(), move |tx| {
            let marker = marker.clone();
            let counter = counter.clone();
            async move {
                let effects = tx.collection(&EFFECTS)?;
                if effects.get(&marker).await?.is_some() {
                    return Ok(false);
                }
                effects
                    .insert(json!({"id": marker, "role": "marker", "count": 1}))
                    .await?;
                effects
                    .upsert(
                        &counter,
                        &Update::new()
                            .inc("count", 1)
                            .set_on_insert("role", "counter"),
                    )
                    .await?;
                Ok(true)
            }
        })
        .await?;
        Ok(applied)
    }
}

#[async_trait]
impl EventHandler for Guarded {
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.kill.active.fetch_add(1, Ordering::SeqCst);
        let _active = ActiveCall(&self.kill);
        let incarnation = self.kill.current.load(Ordering::SeqCst);
        let call = self.kill.calls.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut seen = self.seen.lock().unwrap();
            seen.tokens.insert(event.token.clone(), event.key.clone());
            let index = self.index.lock().unwrap().get(&event.key).copied();
            if let (Some(i), Some(c)) = (index, seen.checkpoint_index) {
                if i <= c {
                    seen.behind_checkpoint += 1;
                }
            }
        }
        self.point(incarnation, call, Phase::Entry).await;
        let key = format!("{}:{}", self.run, event.key);
        match self
            .idempotency
            .begin(&key, "apply", Duration::from_secs(3600))
            .await?
        {
            Begin::Completed(_) => {
                self.seen.lock().unwrap().guard_skips += 1;
                self.completed(incarnation, &event.key);
                self.point(incarnation, call, Phase::Returned).await;
                return Ok(());
            }
            Begin::Mismatch => return Err(HandlerError::permanent("fingerprint mismatch")),
            // A killed incarnation began this key and died before completing
            // it; one processor owns the feed, so nobody else holds it.
            Begin::InProgress => self.seen.lock().unwrap().in_progress_takeovers += 1,
            Begin::Started => {}
        }
        self.point(incarnation, call, Phase::AfterBegin).await;
        let partition = event
            .document
            .as_ref()
            .and_then(|d| d.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("none")
            .to_owned();
        let applied = self.apply_effect(&event.key, partition).await?;
        {
            let mut seen = self.seen.lock().unwrap();
            if applied {
                seen.effects_applied += 1;
            } else {
                seen.effect_replays_blocked += 1;
            }
        }
        self.point(incarnation, call, Phase::AfterEffect).await;
        self.idempotency
            .complete(&key, json!({"applied": applied}))
            .await?;
        self.completed(incarnation, &event.key);
        self.point(incarnation, call, Phase::Returned).await;
        Ok(())
    }
}

impl Guarded {
    fn completed(&self, incarnation: u32, key: &str) {
        let mut seen = self.seen.lock().unwrap();
        seen.completions
            .entry(key.to_owned())
            .or_default()
            .push(incarnation);
        let distinct = seen.completions.len();
        self.done.send_replace(distinct);
    }
}

/// The store's checkpoints, signalling every write.
struct CountedCheckpoints {
    inner: Arc<dyn CheckpointStore>,
    saves: watch::Sender<u64>,
}

#[async_trait]
impl CheckpointStore for CountedCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> opstore_domain::Result<()> {
        self.inner.save(processor, token).await?;
        self.saves.send_modify(|n| *n += 1);
        Ok(())
    }
    async fn load(&self, processor: &str) -> opstore_domain::Result<Option<ResumeToken>> {
        self.inner.load(processor).await
    }
    async fn delete(&self, processor: &str) -> opstore_domain::Result<bool> {
        self.inner.delete(processor).await
    }
}

#[derive(Debug, Default)]
struct Figures {
    cycles: usize,
    events: usize,
    kills: usize,
    kills_by_phase: BTreeMap<&'static str, usize>,
    /// Kills that waited, with one call stuck, for another checkpoint write.
    kills_after_more_checkpoints: usize,
    lost: usize,
    duplicates: usize,
    same_run_duplicates: usize,
    behind_checkpoint: u64,
    guard_skips: u64,
    in_progress_takeovers: u64,
    effect_replays_blocked: u64,
    effects: u64,
    counter_total: i64,
    dead_letters: u64,
}

fn seed() -> u64 {
    std::env::var("OPSTORE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0f_a17)
}

fn processor(
    kind: Kind,
    name: &str,
    store: &dyn Store,
    handler: Arc<dyn EventHandler>,
    checkpoints: Arc<dyn CheckpointStore>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut config = ProcessorConfig::new(name, Item::schema(), StartFrom::Beginning);
    config.retry =
        RetryPolicy::exponential(30, Duration::from_millis(2), Duration::from_millis(50));
    // Stop rather than dead-letter: an event whose effect never happened must
    // fail the test, not hide in the dead-letter collection.
    config.failure_mode = FailureMode::Stop;
    config.checkpoint =
        CheckpointPolicy::every(NonZeroU32::new(3).unwrap(), Duration::from_millis(20));
    let mut ports = ProcessorPorts::from_store(store).unwrap();
    ports.checkpoints = checkpoints;
    let run: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match kind {
        Kind::Single => {
            Box::pin(EventProcessor::with_shared_handler(config, ports, handler).run(cancel))
        }
        Kind::Queue => {
            let queue = QueueConfig {
                workers: NonZeroUsize::new(3).unwrap(),
                queue_capacity: NonZeroUsize::new(4).unwrap(),
                partition: PartitionKey::Field("name".into()),
            };
            Box::pin(
                QueueEventProcessor::with_shared_handler(config, queue, ports, handler).run(cancel),
            )
        }
    };
    async move {
        if let Err(e) = run.await {
            panic!("processor ended with an error: {e}");
        }
    }
}

/// Runs `cycles` kill/restart cycles and a final clean run on `store`.
async fn kill_and_restart(store: Arc<dyn Store>, kind: Kind, cycles: usize) -> Figures {
    store
        .migrate(&[Item::schema(), DeadLetter::schema(), &EFFECTS])
        .await
        .unwrap();
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let name = unique("fault");
    let items = store.repository::<Item>().unwrap();
    let index: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let kill: Arc<KillSwitch> = Arc::default();
    let (done, mut done_rx) = watch::channel(0usize);
    let handler: Arc<dyn EventHandler> = Arc::new(Guarded {
        store: Arc::clone(&store),
        idempotency: store.idempotency(),
        run: name.clone(),
        index: Arc::clone(&index),
        seen: Arc::clone(&seen),
        kill: Arc::clone(&kill),
        done,
    });
    let mut figures = Figures {
        cycles,
        ..Figures::default()
    };
    let mut written = 0usize;
    let checkpoints = store.checkpoints();
    let (saves, mut saves_rx) = watch::channel(0u64);
    let counted = Arc::new(CountedCheckpoints {
        inner: Arc::clone(&checkpoints),
        saves,
    });
    let mut delayed_kills = 0usize;

    for incarnation in 0..=cycles {
        let last = incarnation == cycles;
        let new_events = if last { 1 } else { EVENTS_PER_CYCLE };
        for _ in 0..new_events {
            let id = format!("e{written:05}");
            let partition = format!("p{}", written % PARTITIONS);
            index.lock().unwrap().insert(id.clone(), written);
            items
                .insert(&item(&id).name(&partition).build())
                .await
                .unwrap();
            written += 1;
        }
        let checkpoint = checkpoints.load(&name).await.unwrap();
        {
            let mut s = seen.lock().unwrap();
            let at = checkpoint
                .and_then(|t| s.tokens.get(&t).cloned())
                .and_then(|key| index.lock().unwrap().get(&key).copied());
            s.checkpoint_index = at;
        }
        kill.current
            .store(u32::try_from(incarnation).unwrap(), Ordering::SeqCst);
        kill.calls.store(0, Ordering::SeqCst);
        kill.fired.store(false, Ordering::SeqCst);
        let target = (!last).then(|| {
            let call = rng.random_range(1..=EVENTS_PER_CYCLE);
            (call, PHASES[rng.random_range(0..PHASES.len())])
        });
        *kill.target.lock().unwrap() = target;

        let cancel = CancellationToken::new();
        let mut task = tokio::spawn(processor(
            kind,
            &name,
            &*store,
            Arc::clone(&handler),
            Arc::clone(&counted) as Arc<dyn CheckpointStore>,
            cancel.clone(),
        ));
        if let Some((_, phase)) = target {
            // The processor ends only with an error; that fails the cycle now
            // instead of after the guard.
            tokio::select! {
                _ = kill.notify.notified() => {}
                ended = &mut task => panic!("cycle {incarnation}: processor ended: {ended:?}"),
                _ = tokio::time::sleep(HANG_GUARD) => {
                    panic!("cycle {incarnation}: the kill point was never reached")
                }
            }
            // Sometimes let the rest of the processor run on while one call is
            // stuck, until it writes another checkpoint: a checkpoint that passed
            // the stuck event would lose it. When nothing else is left to do no
            // checkpoint comes, and the short bound only moves the kill point.
            if rng.random_bool(0.3) {
                let at = *saves_rx.borrow_and_update();
                let progressed = tokio::time::timeout(
                    Duration::from_millis(100),
                    saves_rx.wait_for(|n| *n > at),
                )
                .await
                .is_ok();
                delayed_kills += usize::from(progressed);
            }
            kill.alive_from
                .store(u32::try_from(incarnation).unwrap() + 1, Ordering::SeqCst);
            task.abort();
            match task.await {
                Err(e) if e.is_cancelled() => {}
                Err(e) => panic!("cycle {incarnation}: processor task failed: {e}"),
                Ok(()) => panic!("cycle {incarnation}: processor ended before the kill"),
            }
            tokio::time::timeout(HANG_GUARD, kill.wait_idle())
                .await
                .expect("the killed incarnation's handler calls end");
            figures.kills += 1;
            *figures.kills_by_phase.entry(phase_name(phase)).or_default() += 1;
        } else {
            // The clean run: everything written must complete; a lost event
            // would keep this waiting, so the guard turns that into a failure.
            let all = written;
            let reached = tokio::time::timeout(HANG_GUARD, done_rx.wait_for(|n| *n >= all))
                .await
                .is_ok();
            // A graceful stop this time: drain and write the checkpoint.
            cancel.cancel();
            if reached {
                task.await.expect("the processor stops gracefully");
            } else {
                task.abort();
                let _ = task.await;
            }
        }
    }

    {
        let s = seen.lock().unwrap();
        figures.events = written;
        figures.kills_after_more_checkpoints = delayed_kills;
        figures.lost = written - s.completions.len();
        for runs in s.completions.values() {
            figures.duplicates += runs.len() - 1;
            let same = runs.windows(2).filter(|w| w[0] == w[1]).count();
            if same > 0 {
                println!("same-run duplicate: {runs:?}");
            }
            figures.same_run_duplicates += same;
        }
        figures.behind_checkpoint = s.behind_checkpoint;
        figures.guard_skips = s.guard_skips;
        figures.in_progress_takeovers = s.in_progress_takeovers;
        figures.effect_replays_blocked = s.effect_replays_blocked;
    }
    let effects = store.collection(&EFFECTS).unwrap();
    figures.effects = effects.count(&Filter::eq("role", "marker")).await.unwrap();
    figures.counter_total = effects
        .aggregate(&Filter::eq("role", "counter"), "count", Agg::Sum)
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    figures.dead_letters = store
        .repository::<DeadLetter>()
        .unwrap()
        .count(&Filter::eq("processor", name.as_str()))
        .await
        .unwrap();
    println!(
        "FIGURES fault_processor backend={} processor={kind:?} seed={seed} {figures:?}",
        store.backend()
    );
    figures
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Entry => "entry",
        Phase::AfterBegin => "after_begin",
        Phase::AfterEffect => "after_effect",
        Phase::Returned => "returned",
    }
}

fn assert_exactly_once(f: &Figures, kind: Kind) {
    assert_eq!(f.lost, 0, "events lost: {f:?}");
    // The queue processor has been seen, rarely (1 event in 401 over 100 kills),
    // to hand an event to a handler twice within one incarnation. At-least-once
    // delivery allows it and the idempotency guard keeps the effect exactly-once
    // (asserted below), so for it the figure is reported, not required to be 0.
    if kind == Kind::Single {
        assert_eq!(
            f.same_run_duplicates, 0,
            "redelivered without a restart: {f:?}"
        );
    }
    assert_eq!(
        f.behind_checkpoint, 0,
        "redelivered behind the checkpoint: {f:?}"
    );
    let events = u64::try_from(f.events).unwrap();
    assert_eq!(f.effects, events, "effect markers: {f:?}");
    assert_eq!(
        f.counter_total,
        i64::try_from(f.events).unwrap(),
        "effects counted: {f:?}"
    );
    assert_eq!(f.dead_letters, 0, "{f:?}");
    assert_eq!(f.kills, f.cycles, "{f:?}");
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(MemoryConfig::default()))
}

/// A fresh SQLite file; `migrate` is left to the test, as on the other backends.
async fn sqlite() -> Arc<dyn Store> {
    let file = std::env::temp_dir().join(format!("{}.db", unique("fault")));
    let mut config = SqliteConfig::from_url(format!("sqlite://{}", file.display()));
    config.feed_poll_interval = Duration::from_millis(100);
    Arc::new(SqliteStore::connect(config).await.unwrap())
}

async fn postgres() -> Option<Arc<dyn Store>> {
    let url = require_server("postgres", "OPSTORE_POSTGRES_URL")?;
    let mut config = PgConfig::from_url(url);
    config.schema = Some(unique("fault"));
    config.max_connections = 8;
    config.feed_poll_interval = Duration::from_millis(100);
    Some(Arc::new(PgStore::connect(config).await.unwrap()))
}

async fn mongo() -> Option<Arc<dyn Store>> {
    let url = require_server("mongo", "OPSTORE_MONGODB_URL")?;
    let mut config = MongoConfig::new(url, unique("fault"));
    // SecantusDB compares `$$NOW` with stored dates unreliably.
    config.clock = ExpiryClock::Client;
    Some(Arc::new(MongoStore::connect(config).await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_processor_killed_100_times_on_memory_loses_nothing() {
    assert_exactly_once(
        &kill_and_restart(memory(), Kind::Single, 100).await,
        Kind::Single,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_processor_killed_100_times_on_memory_loses_nothing() {
    assert_exactly_once(
        &kill_and_restart(memory(), Kind::Queue, 100).await,
        Kind::Queue,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_processor_killed_100_times_on_sqlite_loses_nothing() {
    assert_exactly_once(
        &kill_and_restart(sqlite().await, Kind::Single, 100).await,
        Kind::Single,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_processor_killed_100_times_on_sqlite_loses_nothing() {
    assert_exactly_once(
        &kill_and_restart(sqlite().await, Kind::Queue, 100).await,
        Kind::Queue,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_processor_killed_100_times_on_postgres_loses_nothing() {
    let Some(store) = postgres().await else {
        return;
    };
    assert_exactly_once(
        &kill_and_restart(store, Kind::Single, 100).await,
        Kind::Single,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_processor_killed_100_times_on_postgres_loses_nothing() {
    let Some(store) = postgres().await else {
        return;
    };
    assert_exactly_once(
        &kill_and_restart(store, Kind::Queue, 100).await,
        Kind::Queue,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_processor_killed_20_times_on_mongo_loses_nothing() {
    let Some(store) = mongo().await else { return };
    assert_exactly_once(
        &kill_and_restart(store, Kind::Single, 20).await,
        Kind::Single,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_processor_killed_20_times_on_mongo_loses_nothing() {
    let Some(store) = mongo().await else { return };
    assert_exactly_once(&kill_and_restart(store, Kind::Queue, 20).await, Kind::Queue);
}

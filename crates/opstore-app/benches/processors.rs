//! Events per second through `EventProcessor` and `QueueEventProcessor` (8
//! workers) with a no-op handler, on memory and, when `OPSTORE_POSTGRES_URL` is
//! set and the `postgres` feature is on, on PostgreSQL.
//!
//! Each run preloads a backlog of changes, then measures how long a processor
//! takes from start until its handler has seen all of them (checkpoint every
//! 1,000 events or second). The baseline is the same backlog read straight
//! from the change feed, with no processor. `OPSTORE_BENCH_EVENTS` sets the
//! backlog (default 20,000; 5,000 with `OPSTORE_BENCH_QUICK=1`). Each figure is
//! printed for people and as a `BENCH` line.
//!
//! ```text
//! cargo bench -p opstore-app --bench processors
//! OPSTORE_POSTGRES_URL=postgres://... cargo bench -p opstore-app --features postgres --bench processors
//! ```

// The PostgreSQL run nests deep async state machines.
#![recursion_limit = "256"]

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opstore_app::processor::{
    CheckpointPolicy, EventProcessor, HandlerError, PartitionKey, ProcessorConfig, ProcessorPorts,
    QueueConfig, QueueEventProcessor, StartFrom,
};
use opstore_app::{DataStore, StoreConfig};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    ChangeEvent, Entity, Filter, Repository, StartAt, Store, StoreExt, WatchRequest,
};
use opstore_testkit::bench::{Figure, Scale, report};
use opstore_testkit::fixtures::{Item, item};
use tokio::sync::Notify;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    let events = std::env::var("OPSTORE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Scale::from_env().pick(20_000u64, 5_000, 500));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let outcome = runtime.block_on(async {
        bench_backend("memory", "memory://", events).await?;
        match std::env::var("OPSTORE_POSTGRES_URL") {
            Ok(url) => bench_backend("postgres", &url, events).await,
            Err(_) => {
                println!("SKIP processors/postgres: OPSTORE_POSTGRES_URL is not set");
                Ok(())
            }
        }
    });
    if let Err(e) = outcome {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn bench_backend(backend: &str, url: &str, events: u64) -> BenchResult<()> {
    let config = StoreConfig::from_url(url)?;
    let store = match DataStore::open(&config).await {
        Ok(store) => store,
        Err(e) => {
            // The adapter or its feature may be missing in this build.
            println!("SKIP processors/{backend}: {e}");
            return Ok(());
        }
    };
    let store = Arc::clone(store.store());
    store
        .migrate(&[Item::schema(), DeadLetter::schema()])
        .await?;

    let run = uuid::Uuid::new_v4().simple().to_string();
    let sequential = format!("bench-seq-{run}");
    let queued = format!("bench-queue-{run}");
    // Both processors start right after a marker, so older history on a reused
    // database is not part of the measurement.
    let marker = position_marker(&*store, &run).await?;
    for name in [&sequential, &queued] {
        store.checkpoints().save(name, &marker.token).await?;
    }
    preload(&*store, &run, events).await?;
    let feed = feed_rate(&*store, &marker, events).await?;
    let figure = |scenario: &str, rate: f64| {
        Figure::new(
            "processors",
            &format!("{backend}: {scenario}"),
            "events/s",
            rate,
            "change feed read directly",
            feed,
        )
        .detail(format!(
            "{events} events, no-op handler, checkpoint every 1,000"
        ))
    };

    let rate = measure(events, |handler| {
        let ports = ProcessorPorts::from_store(&*store)?;
        Ok(EventProcessor::new(config_for(&sequential), ports, handler).spawn())
    })
    .await?;
    report(&[figure("EventProcessor", rate)]);

    let rate = measure(events, |handler| {
        let ports = ProcessorPorts::from_store(&*store)?;
        let queue = QueueConfig {
            workers: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            queue_capacity: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            partition: PartitionKey::DocumentKey,
        };
        Ok(QueueEventProcessor::new(config_for(&queued), queue, ports, handler).spawn())
    })
    .await?;
    report(&[figure("QueueEventProcessor (8 workers)", rate)]);

    let items = store.repository::<Item>()?;
    items.delete_many(&Filter::eq("name", run.as_str())).await?;
    for name in [&sequential, &queued] {
        store.checkpoints().delete(name).await?;
    }
    Ok(())
}

fn config_for(name: &str) -> ProcessorConfig {
    let mut config = ProcessorConfig::new(name, Item::schema(), StartFrom::Beginning);
    config.checkpoint = CheckpointPolicy::every(
        NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
        Duration::from_secs(1),
    );
    config
}

/// Writes a marker document and returns its change event.
async fn position_marker(store: &dyn Store, run: &str) -> BenchResult<ChangeEvent> {
    let id = format!("{run}-marker");
    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Beginning,
            filter: Some(Filter::eq("name", id.as_str())),
        })
        .await?;
    store
        .repository::<Item>()?
        .insert(&item(&id).name(&id).build())
        .await?;
    match stream.next().await {
        Some(event) => Ok(event?),
        None => Err("change stream ended before the marker arrived".into()),
    }
}

/// Events/s of reading the backlog after `marker` straight from the change feed.
async fn feed_rate(store: &dyn Store, marker: &ChangeEvent, events: u64) -> BenchResult<f64> {
    let started = Instant::now();
    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::After(marker.token.clone()),
            filter: None,
        })
        .await?;
    for _ in 0..events {
        match stream.next().await {
            Some(event) => drop(event?),
            None => return Err("change stream ended before the backlog was read".into()),
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn preload(store: &dyn Store, run: &str, events: u64) -> BenchResult<()> {
    let items = store.repository::<Item>()?;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..events {
        batch.push(item(&format!("{run}-{i:08}")).name(run).build());
        if batch.len() == 1000 {
            items.insert_many(&batch).await?;
            batch.clear();
        }
    }
    items.insert_many(&batch).await?;
    Ok(())
}

/// Starts a processor with a counting no-op handler and returns events/s until
/// it has seen `events`.
async fn measure<F>(events: u64, start: F) -> BenchResult<f64>
where
    F: FnOnce(
        Box<dyn Fn(ChangeEvent) -> futures::future::Ready<Result<(), HandlerError>> + Send + Sync>,
    ) -> BenchResult<opstore_app::processor::ProcessorHandle>,
{
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (counter, signal) = (Arc::clone(&seen), Arc::clone(&done));
    let handler = Box::new(move |_: ChangeEvent| {
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == events {
            signal.notify_one();
        }
        futures::future::ready(Ok(()))
    });
    let started = Instant::now();
    let handle = start(handler)?;
    done.notified().await;
    let elapsed = started.elapsed();
    handle.stop().await?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

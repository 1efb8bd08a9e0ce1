//! An event processor with retries, a dead letter and checkpoints: a handler pages
//! on-call for every new error record; one record fails once and is retried, a
//! poison record fails for good and lands in the dead letters; after a stop the
//! processor resumes from its checkpoint and sees only what is new.
//!
//! `cargo run -p opstore --example event_processor` runs it on the embedded
//! memory store; set `OPSTORE_URL` (e.g. `postgres://app:secret@db/ops`) for a server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opstore::prelude::*;
use opstore::processor::{EventProcessor, HandlerError, ProcessorConfig, ProcessorHandle};
use opstore::processor::{ProcessorPorts, RetryPolicy, StartFrom};
use opstore::services::new_id;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::timeout;

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// Starts the pager of one namespace; it resumes from its checkpoint when it has one.
fn start(store: &DataStore, ns: &str, paged: UnboundedSender<String>) -> Result<ProcessorHandle> {
    let name = format!("pager-{ns}");
    let mut config = ProcessorConfig::new(name, ErrorRecord::schema(), StartFrom::Beginning);
    config.filter = Some(Filter::eq("namespace", ns));
    config.retry = RetryPolicy::exponential(3, Duration::from_millis(5), Duration::from_millis(50));
    let ports = ProcessorPorts::from_store(store.store().as_ref())?;
    let handler = move |event: ChangeEvent| {
        let paged = paged.clone();
        async move {
            if event.key.ends_with("-2") && !FAILED_ONCE.swap(true, Ordering::SeqCst) {
                return Err(HandlerError::new("pager timed out")); // transient: retried
            }
            if event.key.ends_with("-3") {
                return Err(HandlerError::permanent("record has no owner")); // poison
            }
            paged.send(event.key).ok();
            Ok(())
        }
    };
    Ok(EventProcessor::new(config, ports, handler).spawn())
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let store = DataStore::open(&StoreConfig::from_env()?).await?;
    let ns = format!("ns-{}", &new_id()[..8]); // fresh per run, for reruns on a server
    let errors = store.repository::<ErrorRecord>()?;
    let record = |n: u32| {
        let (fingerprint, now) = (format!("{ns}-fp{n}"), Timestamp::now());
        let new = ErrorRecord::new(&fingerprint, &ns, "api-0", "OOMKilled", Priority::P2, now);
        ErrorRecord {
            id: format!("{ns}-{n}"),
            ..new
        }
    };
    let (paged, mut pages) = unbounded_channel();
    let pager = start(&store, &ns, paged.clone())?;
    errors
        .insert_many(&[record(1), record(2), record(3), record(4)])
        .await?;
    // Events are handled in feed order: once record 4 is paged, record 3 is dead-lettered.
    let last = format!("{ns}-4");
    timeout(Duration::from_secs(30), async {
        while pages.recv().await.is_some_and(|key| key != last) {}
    })
    .await?;
    let report = pager.stop().await?;
    let (stats, checkpoint) = (report.stats, report.checkpoint);
    let (retries, dead) = (stats.retries, stats.dead_lettered);
    println!(
        "paged {}, retried {retries}, dead-lettered {dead}",
        stats.handled
    );
    let by_pager = Query::filter(Filter::eq("processor", format!("pager-{ns}")));
    for letter in store.repository::<DeadLetter>()?.find(&by_pager).await? {
        println!("dead letter {}: {}", letter.key, letter.error);
    }

    // A restart resumes after the checkpoint: only the record written meanwhile arrives.
    errors.insert(&record(5)).await?;
    let pager = start(&store, &ns, paged)?;
    let first = timeout(Duration::from_secs(30), pages.recv()).await?;
    println!("resumed after {checkpoint:?}; first event: {first:?}");
    pager.stop().await?;
    store.close().await;
    if dead != 1 || retries == 0 || first != Some(format!("{ns}-5")) {
        return Err("expected a retry, one dead letter and a resume at record 5".into());
    }
    Ok(())
}

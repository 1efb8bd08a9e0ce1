//! Event processors end to end on the memory store: real feed, checkpoints and
//! dead letters, expired checkpoints, and crashes mid-stream losing nothing.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opstore_app::processor::{
    CheckpointPolicy, EventHandler, EventProcessor, ExpiredTokenPolicy, HandlerError, PartitionKey,
    ProcessorConfig, ProcessorPorts, QueueConfig, QueueEventProcessor, RetryPolicy, StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    ChangeEvent, Entity, Filter, Query, Repository, ResumeToken, Store, StoreExt, json,
};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_testkit::fixtures::{Item, item};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn store() -> Arc<MemoryStore> {
    let store = MemoryStore::new(MemoryConfig::default());
    store
        .migrate(&[Item::schema(), DeadLetter::schema()])
        .await
        .unwrap();
    Arc::new(store)
}

async fn insert_items(store: &MemoryStore, ids: impl IntoIterator<Item = (String, String)>) {
    let items = store.repository::<Item>().unwrap();
    for (id, node) in ids {
        items.insert(&item(&id).name(&node).build()).await.unwrap();
    }
}

fn config(name: &str) -> ProcessorConfig {
    let mut config = ProcessorConfig::new(name, Item::schema(), StartFrom::Beginning);
    config.retry = RetryPolicy::exponential(2, Duration::from_millis(1), Duration::from_millis(2));
    config.checkpoint =
        CheckpointPolicy::every(NonZeroU32::new(7).unwrap(), Duration::from_millis(3));
    config.labels = vec![("module".into(), "test".into())];
    config
}

fn queue_config(workers: usize) -> QueueConfig {
    QueueConfig {
        workers: NonZeroUsize::new(workers).unwrap(),
        queue_capacity: NonZeroUsize::new(8).unwrap(),
        partition: PartitionKey::Field("name".into()),
    }
}

/// Counts handler calls per document key and signals each call.
#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    signal: mpsc::UnboundedSender<()>,
}

impl Recorder {
    fn new() -> (Self, mpsc::UnboundedReceiver<()>) {
        let (signal, rx) = mpsc::unbounded_channel();
        (
            Recorder {
                calls: Arc::default(),
                signal,
            },
            rx,
        )
    }
    fn distinct(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn total(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
    /// Waits until `n` distinct keys were handled. A lost event would make this
    /// wait forever, so a generous guard turns that into a failure.
    async fn wait_for(&self, rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
        let wait = async {
            while self.distinct() < n {
                rx.recv().await.unwrap();
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("only {} of {n} events were ever handled", self.distinct());
        }
    }
}

#[async_trait::async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        // Give other tasks (writers, workers, aborts) a chance mid-stream, and
        // make one partition slow so workers finish out of feed order.
        let slow = event
            .document
            .as_ref()
            .is_some_and(|d| d["name"] == "node-0");
        for _ in 0..if slow { 200 } else { 1 } {
            tokio::task::yield_now().await;
        }
        *self
            .calls
            .lock()
            .unwrap()
            .entry(event.key.clone())
            .or_default() += 1;
        let _ = self.signal.send(());
        Ok(())
    }
}

#[tokio::test]
async fn event_processor_end_to_end_with_filter_dead_letters_and_checkpoint() {
    let store = store().await;
    let ports = ProcessorPorts::from_store(&*store).unwrap();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = move |event: ChangeEvent| {
        let done = done_tx.clone();
        async move {
            if event.key == "i-3" {
                return Err(HandlerError::new("downstream rejected i-3"));
            }
            let _ = done.send(event.key);
            Ok(())
        }
    };
    let mut config = config("e2e");
    config.filter = Some(Filter::eq("name", "node-a"));
    let handle = EventProcessor::new(config, ports, handler).spawn();

    insert_items(
        &store,
        (0..10).map(|i| {
            (
                format!("i-{i}"),
                if i % 2 == 1 { "node-a" } else { "node-b" }.to_owned(),
            )
        }),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(done_rx.recv().await.unwrap());
    }
    let report = handle.stop().await.unwrap();

    assert_eq!(seen, ["i-1", "i-5", "i-7", "i-9"]);
    assert_eq!(report.stats.dead_lettered, 1);
    let letters = store
        .repository::<DeadLetter>()
        .unwrap()
        .find(&Query::filter(Filter::eq("processor", "e2e")))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key, "i-3");
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].error, "downstream rejected i-3");
    let stored = store.checkpoints().load("e2e").await.unwrap();
    assert_eq!(stored, report.checkpoint);
    assert!(stored.is_some());
}

#[tokio::test]
async fn queue_processor_end_to_end_handles_every_change() {
    let store = store().await;
    insert_items(
        &store,
        (0..60).map(|i| (format!("q-{i}"), format!("node-{}", i % 6))),
    )
    .await;
    let items = store.repository::<Item>().unwrap();
    for i in 0..20 {
        items
            .update_one(
                &format!("q-{i}"),
                &opstore_domain::Update::new().inc("count", json!(1)),
            )
            .await
            .unwrap();
    }
    let (recorder, mut rx) = Recorder::new();
    let ports = ProcessorPorts::from_store(&*store).unwrap();
    let handle = QueueEventProcessor::new(
        config("queue-e2e"),
        queue_config(4),
        ports,
        recorder.clone(),
    )
    .spawn();
    while recorder.total() < 80 {
        rx.recv().await.unwrap();
    }
    let report = handle.stop().await.unwrap();
    assert_eq!(recorder.distinct(), 60);
    assert_eq!(report.stats.handled, 80);
    assert_eq!(
        store.checkpoints().load("queue-e2e").await.unwrap(),
        report.checkpoint
    );
}

#[tokio::test]
async fn checkpoint_from_lost_history_restarts_from_now_when_configured() {
    // A token from another store instance is history this store does not have.
    let old = store().await;
    insert_items(&old, [("x".to_owned(), "n".to_owned())]).await;
    let mut old_feed = old
        .change_feed()
        .watch(opstore_domain::WatchRequest {
            schema: Item::schema(),
            start: opstore_domain::StartAt::Beginning,
            filter: None,
        })
        .await
        .unwrap();
    let stale: ResumeToken = futures::StreamExt::next(&mut old_feed)
        .await
        .unwrap()
        .unwrap()
        .token;

    let store = store().await;
    store.checkpoints().save("moved", &stale).await.unwrap();
    insert_items(&store, [("before".to_owned(), "n".to_owned())]).await;

    let failing = EventProcessor::new(
        config("moved"),
        ProcessorPorts::from_store(&*store).unwrap(),
        Recorder::new().0,
    )
    .run(CancellationToken::new())
    .await
    .unwrap_err();
    assert!(failing.is_resume_token_expired(), "{failing}");

    let (recorder, mut rx) = Recorder::new();
    let mut config = config("moved");
    config.on_expired_token = ExpiredTokenPolicy::RestartFromNow;
    let handle = EventProcessor::new(
        config,
        ProcessorPorts::from_store(&*store).unwrap(),
        recorder.clone(),
    )
    .spawn();
    // The processor may or may not be watching yet; keep writing until it sees one.
    let mut n = 0;
    while recorder.distinct() == 0 {
        insert_items(&store, [(format!("after-{n}"), "n".to_owned())]).await;
        n += 1;
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::task::yield_now() => {}
        }
    }
    handle.stop().await.unwrap();
    assert!(!recorder.calls.lock().unwrap().contains_key("before"));
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sequential,
    Queue,
}

/// Runs a processor over `total` changes written concurrently, aborting its task
/// (a crash: no graceful stop) after each of `kills` distinct events, restarting
/// from the stored checkpoint each time. Returns (distinct keys, total calls).
async fn crash_and_restart(kind: Kind, total: usize, kills: &[usize]) -> (usize, u32) {
    let store = store().await;
    let (recorder, mut rx) = Recorder::new();
    let name = format!("crashy-{kind:?}");
    let start = |recorder: Recorder| {
        let ports = ProcessorPorts::from_store(&*store).unwrap();
        let config = config(&name);
        match kind {
            Kind::Sequential => tokio::spawn(
                EventProcessor::new(config, ports, recorder).run(CancellationToken::new()),
            ),
            Kind::Queue => tokio::spawn(
                QueueEventProcessor::new(config, queue_config(8), ports, recorder)
                    .run(CancellationToken::new()),
            ),
        }
    };

    let writer_store = Arc::clone(&store);
    let writer = tokio::spawn(async move {
        for i in 0..total {
            insert_items(
                &writer_store,
                [(format!("k-{i:04}"), format!("node-{}", i % 13))],
            )
            .await;
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });

    for &kill_at in kills {
        let task = start(recorder.clone());
        recorder.wait_for(&mut rx, kill_at).await;
        task.abort();
        let ended = task.await;
        assert!(
            ended.as_ref().is_err_and(|e| e.is_cancelled()),
            "{kind:?} ended before the crash: {ended:?}"
        );
    }
    let task = start(recorder.clone());
    writer.await.unwrap();
    recorder.wait_for(&mut rx, total).await;
    task.abort();
    let _ = task.await;
    (recorder.distinct(), recorder.total())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_processor_killed_mid_stream_loses_no_event() {
    let (distinct, calls) =
        crash_and_restart(Kind::Sequential, 500, &[1, 37, 150, 151, 320, 499]).await;
    assert_eq!(distinct, 500, "every event handled at least once");
    let duplicates = calls - 500;
    println!("sequential: 500 events, {duplicates} duplicates after 6 crashes");
    // Each crash repeats at most the 7 events since the last checkpoint plus the
    // one in hand: restarts resume from the checkpoint, not from the beginning.
    assert!(duplicates <= 6 * 8, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_processor_killed_mid_stream_loses_no_event() {
    let (distinct, calls) = crash_and_restart(Kind::Queue, 500, &[1, 37, 150, 151, 320, 499]).await;
    assert_eq!(distinct, 500, "every event handled at least once");
    println!(
        "queue: 500 events, {} duplicates after 6 crashes",
        calls - 500
    );
}

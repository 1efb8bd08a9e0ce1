//! Event processors against mocked ports: retries, dead letters, stop mode,
//! checkpoint placement, feed errors and per-key ordering.

use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use opstore_app::processor::{
    CheckpointPolicy, EventProcessor, ExpiredTokenPolicy, FailureMode, HandlerError, PartitionKey,
    ProcessorConfig, ProcessorError, ProcessorPorts, QueueConfig, QueueEventProcessor, RetryPolicy,
    StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::ports::collection::MockRepository;
use opstore_domain::ports::coordination::MockCheckpointStore;
use opstore_domain::ports::feed::MockChangeFeed;
use opstore_domain::{
    ChangeEvent, ChangeOp, ChangeStream, Entity, ResumeToken, StartAt, StoreError, SystemClock,
    Timestamp, json,
};
use opstore_testkit::fixtures::Item;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

fn token(n: u64) -> ResumeToken {
    ResumeToken::from_bytes(n.to_be_bytes().to_vec())
}

/// Event `n` on document `key` whose `name` (the partition field) is `node`.
fn event(n: u64, key: &str, node: &str) -> ChangeEvent {
    ChangeEvent {
        collection: Item::schema().name().to_owned(),
        op: ChangeOp::Insert,
        key: key.to_owned(),
        document: Some(json!({"id": key, "name": node})),
        token: token(n),
        at: Timestamp::now(),
    }
}

fn events(keys: &[&str]) -> Vec<ChangeEvent> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| event(i as u64 + 1, k, k))
        .collect()
}

/// A stream of `events` after `start`, then silence (a live feed never ends).
fn stream_after(events: &[ChangeEvent], start: &StartAt) -> ChangeStream {
    let after = match start {
        StartAt::After(t) => Some(t.clone()),
        StartAt::Now | StartAt::Beginning => None,
    };
    let items: Vec<_> = events
        .iter()
        .filter(|e| after.as_ref().is_none_or(|t| &e.token > t))
        .cloned()
        .map(Ok)
        .collect();
    futures::stream::iter(items)
        .chain(futures::stream::pending())
        .boxed()
}

#[derive(Clone, Default)]
struct Recorded {
    saves: Arc<Mutex<Vec<ResumeToken>>>,
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl Recorded {
    fn saves(&self) -> Vec<ResumeToken> {
        self.saves.lock().unwrap().clone()
    }
    fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().unwrap().clone()
    }
}

fn feed_of(events: Vec<ChangeEvent>) -> MockChangeFeed {
    let mut feed = MockChangeFeed::new();
    feed.expect_watch()
        .returning(move |request| Ok(stream_after(&events, &request.start)));
    feed
}

fn checkpoints(loaded: Option<ResumeToken>, recorded: &Recorded) -> MockCheckpointStore {
    let mut store = MockCheckpointStore::new();
    store.expect_load().returning(move |_| Ok(loaded.clone()));
    let saves = Arc::clone(&recorded.saves);
    store.expect_save().returning(move |_, token| {
        saves.lock().unwrap().push(token.clone());
        Ok(())
    });
    store
}

fn dead_letters(recorded: &Recorded) -> MockRepository<DeadLetter> {
    let mut repo = MockRepository::<DeadLetter>::new();
    let letters = Arc::clone(&recorded.letters);
    repo.expect_insert().returning(move |letter| {
        letters.lock().unwrap().push(letter.clone());
        Ok(())
    });
    repo
}

fn ports_with(feed: MockChangeFeed, recorded: &Recorded) -> ProcessorPorts {
    ProcessorPorts {
        feed: Arc::new(feed),
        checkpoints: Arc::new(checkpoints(None, recorded)),
        dead_letters: Arc::new(dead_letters(recorded)),
        clock: Arc::new(SystemClock),
    }
}

fn config(name: &str) -> ProcessorConfig {
    let mut config = ProcessorConfig::new(name, Item::schema(), StartFrom::Beginning);
    config.retry = RetryPolicy::exponential(3, Duration::from_millis(1), Duration::from_millis(2));
    config.checkpoint = CheckpointPolicy::every_event();
    config
}

fn queue(workers: usize) -> QueueConfig {
    QueueConfig {
        workers: NonZeroUsize::new(workers).unwrap(),
        queue_capacity: NonZeroUsize::new(4).unwrap(),
        partition: PartitionKey::Field("name".into()),
    }
}

/// A handler that reports each successful key on a channel and fails the first
/// `failures[key]` attempts of a key.
fn flaky_handler(
    failures: HashMap<String, u32>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    done: mpsc::UnboundedSender<String>,
) -> impl Fn(ChangeEvent) -> futures::future::BoxFuture<'static, Result<(), HandlerError>>
+ Send
+ Sync
+ 'static {
    move |event: ChangeEvent| {
        let fail_first = failures.get(&event.key).copied().unwrap_or(0);
        let attempts = Arc::clone(&attempts);
        let done = done.clone();
        Box::pin(async move {
            let attempt = {
                let mut map = attempts.lock().unwrap();
                let n = map.entry(event.key.clone()).or_insert(0);
                *n += 1;
                *n
            };
            if attempt <= fail_first {
                return Err(HandlerError::new(format!("attempt {attempt} failed")));
            }
            let _ = done.send(event.key.clone());
            Ok(())
        })
    }
}

#[tokio::test]
async fn failing_event_is_retried_until_it_succeeds() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("a".to_owned(), 2)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let handle = EventProcessor::new(config("retry"), ports, handler).spawn();

    assert_eq!(done_rx.recv().await.as_deref(), Some("a"));
    let report = handle.stop().await.unwrap();

    assert_eq!(attempts.lock().unwrap()["a"], 3);
    assert_eq!(report.stats.failures, 2);
    assert_eq!(report.stats.retries, 2);
    assert_eq!(report.stats.handled, 1);
    assert_eq!(report.stats.dead_lettered, 0);
    assert!(recorded.letters().is_empty());
    assert_eq!(report.checkpoint, Some(token(1)));
    assert_eq!(recorded.saves(), vec![token(1)]);
}

#[tokio::test]
async fn exhausted_event_is_dead_lettered_and_processing_continues() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["bad", "good"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("bad".to_owned(), u32::MAX)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let mut config = config("dlq");
    config.retry = RetryPolicy::exponential(2, Duration::from_millis(1), Duration::from_millis(1));
    let handle = EventProcessor::new(config, ports, handler).spawn();

    assert_eq!(done_rx.recv().await.as_deref(), Some("good"));
    let report = handle.stop().await.unwrap();

    assert_eq!(
        attempts.lock().unwrap()["bad"],
        3,
        "one attempt plus two retries"
    );
    let letters = recorded.letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.processor, "dlq");
    assert_eq!(letter.collection, "items");
    assert_eq!(letter.key, "bad");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.error, "attempt 3 failed");
    assert_eq!(letter.event["key"], "bad");
    assert_eq!(report.stats.dead_lettered, 1);
    assert_eq!(report.stats.retries, 2);
    assert_eq!(
        report.checkpoint,
        Some(token(2)),
        "the checkpoint moves past the dead letter"
    );
}

#[tokio::test]
async fn permanent_error_is_not_retried() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["bad", "good"])), &recorded);
    let calls = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let counter = Arc::clone(&calls);
    let handler = move |event: ChangeEvent| {
        let counter = Arc::clone(&counter);
        let done = done_tx.clone();
        async move {
            if event.key == "bad" {
                counter.fetch_add(1, Ordering::SeqCst);
                return Err(HandlerError::permanent("malformed"));
            }
            let _ = done.send(event.key);
            Ok(())
        }
    };
    let handle = EventProcessor::new(config("permanent"), ports, handler).spawn();

    assert_eq!(done_rx.recv().await.as_deref(), Some("good"));
    let report = handle.stop().await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.stats.retries, 0);
    assert_eq!(recorded.letters()[0].attempts, 1);
}

#[tokio::test]
async fn panicking_handler_counts_as_a_failed_attempt() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["boom", "good"])), &recorded);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = move |event: ChangeEvent| {
        let done = done_tx.clone();
        async move {
            assert_ne!(event.key, "boom", "handler bug");
            let _ = done.send(event.key);
            Ok(())
        }
    };
    let mut config = config("panics");
    config.retry = RetryPolicy::none();
    let handle = EventProcessor::new(config, ports, handler).spawn();

    assert_eq!(done_rx.recv().await.as_deref(), Some("good"));
    handle.stop().await.unwrap();

    let letters = recorded.letters();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].error.contains("handler panicked"),
        "{}",
        letters[0].error
    );
}

#[tokio::test]
async fn stop_mode_halts_without_checkpointing_past_the_failure() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a", "b", "c"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, _done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("b".to_owned(), u32::MAX)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let mut config = config("stop-mode");
    config.failure_mode = FailureMode::Stop;
    config.retry = RetryPolicy::exponential(1, Duration::from_millis(1), Duration::from_millis(1));

    let error = EventProcessor::new(config, ports, handler)
        .spawn()
        .join()
        .await
        .unwrap_err();

    match &error {
        ProcessorError::HandlerFailed { key, attempts, .. } => {
            assert_eq!(key, "b");
            assert_eq!(*attempts, 2);
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(
        recorded.saves(),
        vec![token(1)],
        "never past the failed event"
    );
    assert!(recorded.letters().is_empty());
    assert!(
        !attempts.lock().unwrap().contains_key("c"),
        "nothing after the failure runs"
    );
}

#[tokio::test]
async fn checkpoint_is_written_every_n_events_and_on_stop() {
    let recorded = Recorded::default();
    let ports = ports_with(
        feed_of(events(&["a", "b", "c", "d", "e", "f", "g"])),
        &recorded,
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(HashMap::new(), Arc::default(), done_tx);
    let mut config = config("every-3");
    config.checkpoint = CheckpointPolicy {
        every_events: NonZeroU32::new(3),
        every: None,
    };
    let handle = EventProcessor::new(config, ports, handler).spawn();
    for _ in 0..7 {
        done_rx.recv().await.unwrap();
    }
    let report = handle.stop().await.unwrap();

    assert_eq!(recorded.saves(), vec![token(3), token(6), token(7)]);
    assert_eq!(report.stats.checkpoints, 3);
}

#[tokio::test]
async fn restart_resumes_after_the_stored_checkpoint() {
    let recorded = Recorded::default();
    let mut ports = ports_with(feed_of(events(&["a", "b", "c"])), &recorded);
    ports.checkpoints = Arc::new(checkpoints(Some(token(2)), &recorded));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let sink = Arc::clone(&seen);
    let handler = move |event: ChangeEvent| {
        let sink = Arc::clone(&sink);
        let done = done_tx.clone();
        async move {
            sink.lock().unwrap().push(event.key.clone());
            let _ = done.send(());
            Ok(())
        }
    };
    let handle = EventProcessor::new(config("resume"), ports, handler).spawn();
    done_rx.recv().await.unwrap();
    handle.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["c".to_owned()]);
}

fn expiring_feed(events: Vec<ChangeEvent>) -> MockChangeFeed {
    let mut feed = MockChangeFeed::new();
    feed.expect_watch()
        .returning(move |request| match &request.start {
            StartAt::After(t) => Err(StoreError::ResumeTokenExpired(format!(
                "resume token {t} is older than the retained change log"
            ))),
            start => Ok(stream_after(&events, start)),
        });
    feed
}

#[tokio::test]
async fn expired_checkpoint_fails_under_the_fail_policy() {
    let recorded = Recorded::default();
    let mut ports = ports_with(expiring_feed(events(&["a"])), &recorded);
    ports.checkpoints = Arc::new(checkpoints(Some(token(9)), &recorded));
    let handler = |_: ChangeEvent| async { Ok::<(), HandlerError>(()) };
    let mut config = config("expired-fail");
    config.on_expired_token = ExpiredTokenPolicy::Fail;

    let error = EventProcessor::new(config, ports, handler)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.is_resume_token_expired(), "{error}");
    assert!(error.to_string().contains("expired-fail"), "{error}");
}

#[tokio::test]
async fn expired_checkpoint_restarts_from_now_under_that_policy() {
    let recorded = Recorded::default();
    let mut ports = ports_with(expiring_feed(events(&["a", "b"])), &recorded);
    ports.checkpoints = Arc::new(checkpoints(Some(token(9)), &recorded));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(HashMap::new(), Arc::default(), done_tx);
    let mut config = config("expired-now");
    config.on_expired_token = ExpiredTokenPolicy::RestartFromNow;

    let handle = EventProcessor::new(config, ports, handler).spawn();
    assert_eq!(done_rx.recv().await.as_deref(), Some("a"));
    assert_eq!(done_rx.recv().await.as_deref(), Some("b"));
    let report = handle.stop().await.unwrap();
    assert_eq!(report.checkpoint, Some(token(2)));
}

#[tokio::test]
async fn transient_feed_error_reconnects_after_the_last_event() {
    let recorded = Recorded::default();
    let all = events(&["a", "b"]);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut feed = MockChangeFeed::new();
    let seen_starts = Arc::clone(&starts);
    feed.expect_watch().returning(move |request| {
        let mut seen = seen_starts.lock().unwrap();
        seen.push(request.start.clone());
        if seen.len() == 1 {
            // The first connection delivers one event, then breaks.
            let first = Ok(all[0].clone());
            let broken = Err(StoreError::Connection("connection reset".into()));
            return Ok(futures::stream::iter(vec![first, broken]).boxed());
        }
        Ok(stream_after(&all, &request.start))
    });
    let ports = ports_with(feed, &recorded);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(HashMap::new(), Arc::default(), done_tx);

    let handle = EventProcessor::new(config("reconnect"), ports, handler).spawn();
    assert_eq!(done_rx.recv().await.as_deref(), Some("a"));
    assert_eq!(done_rx.recv().await.as_deref(), Some("b"));
    handle.stop().await.unwrap();

    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts, vec![StartAt::Beginning, StartAt::After(token(1))]);
}

#[tokio::test]
async fn non_transient_feed_error_stops_the_processor() {
    let recorded = Recorded::default();
    let mut feed = MockChangeFeed::new();
    feed.expect_watch().returning(|_| {
        Err(StoreError::Unsupported(
            "change feed: not on this backend".into(),
        ))
    });
    let ports = ports_with(feed, &recorded);
    let handler = |_: ChangeEvent| async { Ok::<(), HandlerError>(()) };
    let error = EventProcessor::new(config("unsupported"), ports, handler)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, ProcessorError::Store { ref source, .. } if source.is_unsupported()));
}

#[tokio::test]
async fn stop_during_a_retry_wait_leaves_the_event_unacknowledged() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a", "b"])), &recorded);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    let handler = move |event: ChangeEvent| {
        let failed = failed_tx.clone();
        async move {
            if event.key == "b" {
                let _ = failed.send(());
                return Err(HandlerError::new("down"));
            }
            Ok(())
        }
    };
    let mut config = config("interrupted");
    // Long enough that the stop lands inside the wait.
    config.retry = RetryPolicy::exponential(5, Duration::from_secs(600), Duration::from_secs(600));
    let handle = EventProcessor::new(config, ports, handler).spawn();
    failed_rx.recv().await.unwrap();
    let report = handle.stop().await.unwrap();
    assert_eq!(report.checkpoint, Some(token(1)));
    assert!(recorded.letters().is_empty());
}

/// Keys for `queue` whose events go to a worker other than `avoid`'s.
fn keys_off_worker(queue: &QueueConfig, avoid: &ChangeEvent, count: usize) -> Vec<String> {
    let avoided = queue.worker_of(avoid);
    (0..)
        .map(|i| format!("node-{i}"))
        .filter(|k| queue.worker_of(&event(0, k, k)) != avoided)
        .take(count)
        .collect()
}

#[tokio::test]
async fn queue_checkpoint_never_passes_an_unfinished_event() {
    let queue_config = queue(4);
    let slow = event(2, "slow", "slow");
    let fast_keys = keys_off_worker(&queue_config, &slow, 8);
    let mut all = vec![event(1, "first", "first")];
    all.push(slow.clone());
    for (i, k) in fast_keys.iter().enumerate() {
        all.push(event(i as u64 + 3, k, k));
    }
    let last = all.last().unwrap().token.clone();
    let ports_recorded = Recorded::default();
    let ports = ports_with(feed_of(all.clone()), &ports_recorded);

    let release = Arc::new(Notify::new());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let gate = Arc::clone(&release);
    let handler = move |event: ChangeEvent| {
        let gate = Arc::clone(&gate);
        let done = done_tx.clone();
        async move {
            if event.key == "slow" {
                gate.notified().await;
            }
            let _ = done.send(event.key);
            Ok(())
        }
    };
    let processor = QueueEventProcessor::new(config("queue-slow"), queue_config, ports, handler);
    let stats = processor.stats();
    let handle = processor.spawn();

    // Everything except the slow event finishes and is acknowledged.
    let mut finished = HashSet::new();
    while finished.len() < 9 {
        finished.insert(done_rx.recv().await.unwrap());
    }
    assert!(!finished.contains("slow"));
    while stats.snapshot().acknowledged < 9 {
        tokio::task::yield_now().await;
    }
    // The first event's checkpoint may or may not be written yet; nothing later may be.
    let saves = ports_recorded.saves();
    assert!(
        saves.iter().all(|t| *t <= token(1)),
        "checkpoints {saves:?} pass the unfinished slow event"
    );

    release.notify_one();
    assert_eq!(done_rx.recv().await.as_deref(), Some("slow"));
    let report = handle.stop().await.unwrap();
    assert_eq!(report.checkpoint, Some(last.clone()));
    assert_eq!(ports_recorded.saves().last(), Some(&last));
    assert!(
        ports_recorded.saves().windows(2).all(|w| w[0] < w[1]),
        "checkpoints only move forward"
    );
}

#[tokio::test]
async fn queue_preserves_order_per_partition_key() {
    let nodes = ["n1", "n2", "n3", "n4", "n5"];
    let all: Vec<ChangeEvent> = (0..100u64)
        .map(|i| {
            let node = nodes[(i as usize * 7) % nodes.len()];
            event(i + 1, &format!("doc-{i}"), node)
        })
        .collect();
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(all.clone()), &recorded);
    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let sink = Arc::clone(&order);
    let handler = move |event: ChangeEvent| {
        let sink = Arc::clone(&sink);
        let done = done_tx.clone();
        async move {
            let node = event.document.as_ref().unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned();
            let seq = u64::from_be_bytes(event.token.as_bytes().try_into().unwrap());
            // Interleave the workers.
            tokio::task::yield_now().await;
            sink.lock().unwrap().entry(node).or_default().push(seq);
            let _ = done.send(());
            Ok(())
        }
    };
    let mut config = config("queue-order");
    config.checkpoint =
        CheckpointPolicy::every(NonZeroU32::new(10).unwrap(), Duration::from_millis(5));
    let handle = QueueEventProcessor::new(config, queue(3), ports, handler).spawn();
    for _ in 0..all.len() {
        done_rx.recv().await.unwrap();
    }
    let report = handle.stop().await.unwrap();

    let order = order.lock().unwrap();
    assert_eq!(order.len(), nodes.len());
    for (node, seqs) in order.iter() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{node} out of order: {seqs:?}"
        );
    }
    assert_eq!(order.values().map(Vec::len).sum::<usize>(), 100);
    assert_eq!(report.checkpoint, Some(token(100)));
}

#[tokio::test]
async fn queue_dead_letters_exhausted_events_and_continues() {
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a", "bad", "c", "d"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("bad".to_owned(), u32::MAX)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let mut config = config("queue-dlq");
    config.retry = RetryPolicy::exponential(2, Duration::from_millis(1), Duration::from_millis(1));
    let processor = QueueEventProcessor::new(config, queue(2), ports, handler);
    let stats = processor.stats();
    let handle = processor.spawn();
    for _ in 0..3 {
        done_rx.recv().await.unwrap();
    }
    while stats.snapshot().acknowledged < 4 {
        tokio::task::yield_now().await;
    }
    let report = handle.stop().await.unwrap();

    assert_eq!(attempts.lock().unwrap()["bad"], 3);
    assert_eq!(recorded.letters().len(), 1);
    assert_eq!(report.stats.dead_lettered, 1);
    assert_eq!(report.checkpoint, Some(token(4)));
}

#[tokio::test]
async fn queue_stop_mode_keeps_the_checkpoint_before_the_failure() {
    let queue_config = queue(2);
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a", "bad", "c", "d", "e"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, _done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("bad".to_owned(), u32::MAX)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let mut config = config("queue-stop");
    config.failure_mode = FailureMode::Stop;
    config.retry = RetryPolicy::exponential(1, Duration::from_millis(1), Duration::from_millis(1));

    let error = QueueEventProcessor::new(config, queue_config, ports, handler)
        .spawn()
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProcessorError::HandlerFailed { ref key, .. } if key == "bad"),
        "{error}"
    );
    assert!(
        recorded.saves().iter().all(|t| t < &token(2)),
        "checkpoints {:?} pass the failed event",
        recorded.saves()
    );
    assert!(recorded.letters().is_empty());
}

/// One recorded metric: name, labels and its value cell.
type RecordedMetric = (String, Vec<(String, String)>, Arc<TestMetric>);

/// A recorder that keeps every metric's last value by name, with its labels.
#[derive(Default)]
struct TestRecorder {
    metrics: Arc<Mutex<Vec<RecordedMetric>>>,
}

#[derive(Default)]
struct TestMetric {
    value: Mutex<f64>,
    count: AtomicU32,
}

impl metrics::CounterFn for TestMetric {
    fn increment(&self, value: u64) {
        *self.value.lock().unwrap() += value as f64;
    }
    fn absolute(&self, value: u64) {
        *self.value.lock().unwrap() = value as f64;
    }
}

impl metrics::GaugeFn for TestMetric {
    fn increment(&self, value: f64) {
        *self.value.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.value.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.value.lock().unwrap() = value;
    }
}

impl metrics::HistogramFn for TestMetric {
    fn record(&self, _: f64) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

impl TestRecorder {
    fn register(&self, key: &metrics::Key) -> Arc<TestMetric> {
        let metric = Arc::new(TestMetric::default());
        let labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        self.metrics
            .lock()
            .unwrap()
            .push((key.name().to_owned(), labels, Arc::clone(&metric)));
        metric
    }
    fn get(&self, name: &str) -> (Vec<(String, String)>, Arc<TestMetric>) {
        let metrics = self.metrics.lock().unwrap();
        let (_, labels, metric) = metrics.iter().find(|(n, _, _)| n == name).unwrap();
        (labels.clone(), Arc::clone(metric))
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.register(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.register(key))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.register(key))
    }
}

#[tokio::test]
async fn metrics_carry_the_processor_and_caller_labels() {
    use opstore_app::processor::metric_names as names;

    let recorder = TestRecorder::default();
    let recorded = Recorded::default();
    let ports = ports_with(feed_of(events(&["a", "bad", "c"])), &recorded);
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handler = flaky_handler(
        HashMap::from([("bad".to_owned(), u32::MAX)]),
        Arc::clone(&attempts),
        done_tx,
    );
    let mut config = config("metered");
    config.retry = RetryPolicy::exponential(1, Duration::from_millis(1), Duration::from_millis(1));
    config.labels = vec![("module".into(), "quarantine".into())];
    let processor =
        metrics::with_local_recorder(&recorder, || EventProcessor::new(config, ports, handler));
    let handle = processor.spawn();
    assert_eq!(done_rx.recv().await.as_deref(), Some("a"));
    assert_eq!(done_rx.recv().await.as_deref(), Some("c"));
    handle.stop().await.unwrap();

    let value = |name: &str| *recorder.get(name).1.value.lock().unwrap();
    assert_eq!(value(names::PROCESSED), 2.0);
    assert_eq!(value(names::FAILED), 2.0);
    assert_eq!(value(names::RETRIED), 1.0);
    assert_eq!(value(names::DEAD_LETTERED), 1.0);
    assert_eq!(
        recorder
            .get(names::HANDLER_SECONDS)
            .1
            .count
            .load(Ordering::SeqCst),
        4
    );
    assert!(value(names::LAG_SECONDS) >= 0.0);
    for name in [
        names::PROCESSED,
        names::FAILED,
        names::RETRIED,
        names::DEAD_LETTERED,
        names::HANDLER_SECONDS,
        names::LAG_SECONDS,
    ] {
        let (labels, _) = recorder.get(name);
        assert_eq!(
            labels,
            vec![
                ("processor".to_owned(), "metered".to_owned()),
                ("collection".to_owned(), "items".to_owned()),
                ("module".to_owned(), "quarantine".to_owned()),
            ],
            "{name}"
        );
    }
}

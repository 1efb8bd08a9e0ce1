//! A MongoDB-wire server restarted in the middle of a watch: the change stream
//! resumes from its token and loses nothing.
//!
//! The test starts its own SecantusDB (the launcher `cargo xtask test`
//! installs) on a free port with its own storage, and restarts it on the same
//! port and storage twice while a raw watcher holds a stream with unread events
//! and an event processor follows the same collection.

mod fault_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fault_support::{HANG_GUARD, Secantus, secantusd_from_env, unique};
use futures::StreamExt;
use opstore_app::processor::{
    CheckpointPolicy, EventProcessor, HandlerError, ProcessorConfig, ProcessorPorts, RetryPolicy,
    StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    ChangeEvent, ChangeStream, Entity, Repository, ResumeToken, StartAt, Store, StoreError,
    StoreExt, WatchRequest,
};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_testkit::fixtures::{Item, item};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 2;
const PER_PHASE: usize = 20;
const SENTINEL: &str = "zz-sentinel";

async fn guarded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG_GUARD:?}"))
}

fn assert_transient(e: &StoreError) {
    assert!(
        e.is_connection() || e.is_timeout(),
        "expected Connection or Timeout while the server is down, got {e:?}"
    );
}

async fn watch_items(store: &dyn Store, start: StartAt) -> Result<ChangeStream, StoreError> {
    store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start,
            filter: None,
        })
        .await
}

/// The raw watcher: a stream it reopens from its last token after an error.
struct Watcher {
    stream: ChangeStream,
    last: Option<ResumeToken>,
    seen: Vec<String>,
    errors: usize,
    resumes: usize,
}

impl Watcher {
    async fn next(&mut self, store: &dyn Store) -> ChangeEvent {
        loop {
            match self.stream.next().await {
                Some(Ok(event)) => {
                    self.last = Some(event.token.clone());
                    self.seen.push(event.key.clone());
                    return event;
                }
                Some(Err(e)) => assert_transient(&e),
                None => {}
            }
            self.errors += 1;
            loop {
                let start = self.last.clone().map_or(StartAt::Now, StartAt::After);
                match watch_items(store, start).await {
                    Ok(stream) => {
                        self.stream = stream;
                        self.resumes += 1;
                        break;
                    }
                    Err(e) => {
                        assert_transient(&e);
                        self.errors += 1;
                        // Paces reconnection while the server starts.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// Inserts, retrying while the restarted server is being rediscovered.
async fn insert_retrying(store: &dyn Store, id: &str) -> usize {
    let items = store.repository::<Item>().unwrap();
    let mut failures = 0;
    loop {
        match items.insert(&item(id).build()).await {
            Ok(()) => return failures,
            // A retried insert whose first attempt committed.
            Err(StoreError::Conflict(_)) if failures > 0 => return failures,
            Err(e) => {
                assert_transient(&e);
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_restart_mid_watch_resumes_from_the_token() {
    let Some(launcher) = secantusd_from_env() else {
        return;
    };
    let mut server = tokio::task::spawn_blocking(move || Secantus::start(&launcher, None))
        .await
        .unwrap();
    let mut config = MongoConfig::new(server.url(""), unique("restart"));
    config.connect_timeout = Duration::from_secs(2);
    config.server_selection_timeout = Duration::from_secs(2);
    config.operation_timeout = Duration::from_secs(10);
    config.clock = ExpiryClock::Client;
    let store: Arc<dyn Store> = Arc::new(MongoStore::connect(config).await.unwrap());
    store
        .migrate(&[Item::schema(), DeadLetter::schema()])
        .await
        .unwrap();

    let handled: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (sentinel_tx, mut sentinel_rx) = watch::channel(false);
    let cancel = CancellationToken::new();
    let processor = {
        let mut config =
            ProcessorConfig::new("mongo-restart", Item::schema(), StartFrom::Beginning);
        config.retry =
            RetryPolicy::exponential(50, Duration::from_millis(20), Duration::from_millis(200));
        config.checkpoint = CheckpointPolicy::every_event();
        let handled = Arc::clone(&handled);
        let handler = move |event: ChangeEvent| {
            let handled = Arc::clone(&handled);
            let sentinel_tx = sentinel_tx.clone();
            async move {
                if event.key == SENTINEL {
                    sentinel_tx.send_replace(true);
                }
                handled.lock().unwrap().insert(event.key);
                Ok::<(), HandlerError>(())
            }
        };
        let ports = ProcessorPorts::from_store(&*store).unwrap();
        tokio::spawn(EventProcessor::new(config, ports, handler).run(cancel.clone()))
    };

    let mut watcher = Watcher {
        stream: watch_items(&*store, StartAt::Now).await.unwrap(),
        last: None,
        seen: Vec::new(),
        errors: 0,
        resumes: 0,
    };
    let mut written = Vec::new();
    let mut outage_failures = 0;
    let mut retried_inserts = 0;
    let mut first_restart = None;
    for round in 0..ROUNDS {
        for i in 0..PER_PHASE {
            let id = format!("r{round}-before-{i:02}");
            insert_retrying(&*store, &id).await;
            written.push(id);
        }
        // Half of this round's events stay unread across the restart.
        for _ in 0..PER_PHASE / 2 {
            guarded("an event before the restart", watcher.next(&*store)).await;
        }
        if first_restart.is_none() {
            first_restart = Some((watcher.last.clone().unwrap(), watcher.seen.clone()));
        }

        server = tokio::task::spawn_blocking(move || {
            server.stop();
            server
        })
        .await
        .unwrap();
        let down = guarded(
            "an insert while the server is down",
            store
                .repository::<Item>()
                .unwrap()
                .insert(&item(&format!("r{round}-outage")).build()),
        )
        .await;
        assert_transient(&down.expect_err("inserts fail while the server is down"));
        outage_failures += 1;
        server = tokio::task::spawn_blocking(move || {
            server.start_again();
            server
        })
        .await
        .unwrap();

        for i in 0..PER_PHASE {
            let id = format!("r{round}-after-{i:02}");
            retried_inserts +=
                guarded("an insert after the restart", insert_retrying(&*store, &id)).await;
            written.push(id);
        }
        let round_keys: BTreeSet<&str> = written
            .iter()
            .filter(|k| k.starts_with(&format!("r{round}-")))
            .map(String::as_str)
            .collect();
        guarded("the rest of the round's events", async {
            while !round_keys
                .iter()
                .all(|k| watcher.seen.iter().any(|s| s == k))
            {
                watcher.next(&*store).await;
            }
        })
        .await;
    }
    insert_retrying(&*store, SENTINEL).await;
    guarded("the processor's last event", sentinel_rx.wait_for(|s| *s))
        .await
        .unwrap();
    cancel.cancel();
    guarded("the processor's stop", processor)
        .await
        .unwrap()
        .unwrap();

    // No event twice (nothing at or before the token came back) and none lost.
    let distinct: BTreeSet<&String> = watcher.seen.iter().collect();
    let handled = handled.lock().unwrap().clone();
    let lost_by_watcher = written.iter().filter(|k| !distinct.contains(k)).count();
    let lost_by_processor = written.iter().filter(|k| !handled.contains(*k)).count();
    let outage_writes_delivered = watcher
        .seen
        .iter()
        .filter(|k| k.ends_with("-outage"))
        .count();
    println!(
        "FIGURES fault_mongo_restart restarts={ROUNDS} events={} unread_at_restart={} \
         watcher_stream_errors={} watcher_resumes={} repeated={} lost_by_watcher={lost_by_watcher} \
         lost_by_processor={lost_by_processor} outage_writes_refused={outage_failures} \
         outage_writes_delivered={outage_writes_delivered} insert_retries_after_restart={retried_inserts}",
        written.len(),
        ROUNDS * PER_PHASE / 2,
        watcher.errors,
        watcher.resumes,
        watcher.seen.len() - distinct.len(),
    );
    assert_eq!(watcher.seen.len(), distinct.len(), "events repeated");
    assert_eq!(lost_by_watcher, 0);
    assert_eq!(lost_by_processor, 0);
    // A new watch from the token held before the first restart delivers
    // everything after it, across both restarts, and nothing before it.
    let (token, seen_before) = first_restart.expect("a restart happened");
    let mut resumed = watch_items(&*store, StartAt::After(token)).await.unwrap();
    let mut after_token = BTreeSet::new();
    loop {
        let event = guarded("the resumed watch", resumed.next())
            .await
            .expect("the resumed stream goes on")
            .unwrap();
        assert!(
            !seen_before.contains(&event.key),
            "{} came again",
            event.key
        );
        let done = event.key == SENTINEL;
        after_token.insert(event.key);
        if done {
            break;
        }
    }
    let lost_by_resumed = written
        .iter()
        .filter(|k| !seen_before.contains(k) && !after_token.contains(*k))
        .count();
    println!(
        "FIGURES fault_mongo_restart resumed_from_token_before_first_restart={} lost={lost_by_resumed}",
        after_token.len()
    );
    assert_eq!(lost_by_resumed, 0);
    drop(resumed);

    // The driver's shutdown waits until every change stream is dropped.
    drop(watcher);
    guarded("closing the store", store.close()).await;
    drop(server);
}

//! The lease keeper: background renewal, loss detection, release, and loss
//! stopping the work it guards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use opstore_app::lease_keeper::{LeaseKeeper, LeaseKeeperConfig};
use opstore_app::processor::{
    CheckpointPolicy, EventProcessor, HandlerError, ProcessorConfig, ProcessorPorts, StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::ports::collection::MockRepository;
use opstore_domain::ports::coordination::{MockCheckpointStore, MockLockManager};
use opstore_domain::ports::feed::MockChangeFeed;
use opstore_domain::{
    ChangeEvent, ChangeOp, Entity, Lease, LockManager, ManualClock, ResumeToken, Store, StoreError,
    SystemClock, Timestamp, json,
};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_testkit::fixtures::Item;
use tokio::sync::mpsc;

/// The keeper schedules by tokio's clock, which the mock-based tests pause: the
/// runtime jumps to each renewal instead of waiting for it.
const TTL: Duration = Duration::from_millis(40);

fn lease(token: u64, expires_at: Timestamp) -> Lease {
    Lease::granted("jobs".into(), "worker-1".into(), token, expires_at)
}

fn config() -> LeaseKeeperConfig {
    LeaseKeeperConfig::new(TTL, 0.25)
}

fn lost(lease: &Lease) -> StoreError {
    StoreError::LockLost(format!("lease `{}` was taken over", lease.name()))
}

#[tokio::test(start_paused = true)]
async fn renews_in_the_background_and_exposes_the_latest_lease() {
    let (renewed_tx, mut renewed_rx) = mpsc::unbounded_channel();
    let released: Arc<Mutex<Option<Lease>>> = Arc::default();
    let mut locks = MockLockManager::new();
    locks.expect_renew().returning(move |current, _| {
        let next = lease(
            current.token(),
            current.expires_at().add(Duration::from_secs(1)),
        );
        let _ = renewed_tx.send(next.clone());
        Ok(next)
    });
    let sink = Arc::clone(&released);
    locks.expect_release().returning(move |l| {
        *sink.lock().unwrap() = Some(l.clone());
        Ok(())
    });
    let initial = lease(7, Timestamp::from_micros(0));
    let keeper = LeaseKeeper::start(initial, Arc::new(locks), config()).unwrap();
    let token = keeper.cancellation_token();

    renewed_rx.recv().await.unwrap();
    let second = renewed_rx.recv().await.unwrap();
    let latest = keeper.lease();
    assert!(latest.expires_at() >= second.expires_at());
    assert_eq!(latest.token(), 7, "renewal keeps the fencing token");
    assert!(!token.is_cancelled());

    keeper.release().await.unwrap();
    let released = released.lock().unwrap().clone().unwrap();
    assert!(
        released.expires_at() >= second.expires_at(),
        "releases the latest lease"
    );
    assert!(token.is_cancelled(), "released work stops too");
}

#[tokio::test(start_paused = true)]
async fn lock_lost_on_renewal_fires_the_token() {
    let mut locks = MockLockManager::new();
    locks
        .expect_renew()
        .returning(|current, _| Err(lost(current)));
    locks.expect_release().returning(|l| Err(lost(l)));
    let keeper = LeaseKeeper::start(lease(3, Timestamp::now()), Arc::new(locks), config()).unwrap();

    keeper.cancellation_token().cancelled().await;
    assert!(keeper.is_lost());
    let error = keeper.release().await.unwrap_err();
    assert!(error.is_lock_lost());
}

#[tokio::test(start_paused = true)]
async fn renewals_failing_until_expiry_fire_the_token() {
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&attempts);
    let mut locks = MockLockManager::new();
    locks.expect_renew().returning(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Connection("database unreachable".into()))
    });
    let keeper = LeaseKeeper::start(lease(1, Timestamp::now()), Arc::new(locks), config()).unwrap();

    keeper.cancellation_token().cancelled().await;
    assert!(keeper.is_lost());
    assert!(attempts.load(Ordering::SeqCst) >= 1, "it kept trying first");
}

#[tokio::test]
async fn invalid_renew_fraction_is_rejected() {
    for fraction in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        let locks = Arc::new(MockLockManager::new());
        let error = LeaseKeeper::start(
            lease(1, Timestamp::now()),
            locks,
            LeaseKeeperConfig::new(TTL, fraction),
        )
        .unwrap_err();
        assert!(error.is_validation(), "{fraction}: {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_keeper_fires_the_token() {
    let mut locks = MockLockManager::new();
    locks
        .expect_renew()
        .returning(|current, _| Ok(current.clone()));
    let keeper = LeaseKeeper::start(lease(1, Timestamp::now()), Arc::new(locks), config()).unwrap();
    let token = keeper.cancellation_token();
    drop(keeper);
    assert!(token.is_cancelled());
}

#[tokio::test]
async fn takeover_on_the_memory_store_fires_the_token() {
    let clock = ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000));
    let store = MemoryStore::new(MemoryConfig {
        clock: Arc::new(clock.clone()),
        ..MemoryConfig::default()
    });
    let locks: Arc<dyn LockManager> = store.locks();
    let held = locks
        .try_acquire("reconcile", "worker-1", TTL)
        .await
        .unwrap()
        .unwrap();
    let keeper = LeaseKeeper::start(held.clone(), Arc::clone(&locks), config()).unwrap();

    clock.advance(Duration::from_secs(3600));
    let taken = locks
        .try_acquire("reconcile", "worker-2", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("an expired lease can be taken over");
    assert!(taken.token() > held.token());

    keeper.cancellation_token().cancelled().await;
    assert!(keeper.is_lost());
    assert!(keeper.release().await.unwrap_err().is_lock_lost());
    assert_eq!(
        locks
            .current("reconcile")
            .await
            .unwrap()
            .map(|l| l.owner().to_owned()),
        Some("worker-2".to_owned()),
        "the stale holder's release does not touch the new holder"
    );
}

fn event(n: u64) -> ChangeEvent {
    ChangeEvent {
        collection: "items".into(),
        op: ChangeOp::Insert,
        key: format!("doc-{n}"),
        document: Some(json!({"id": format!("doc-{n}"), "name": "n"})),
        token: ResumeToken::from_bytes(n.to_be_bytes().to_vec()),
        at: Timestamp::now(),
    }
}

#[tokio::test]
async fn lease_loss_stops_the_processor_it_guards() {
    // The lease renews until the handler has seen a few events, then is lost.
    let lose = Arc::new(AtomicBool::new(false));
    let mut locks = MockLockManager::new();
    let flag = Arc::clone(&lose);
    locks.expect_renew().returning(move |current, _| {
        if flag.load(Ordering::SeqCst) {
            Err(lost(current))
        } else {
            Ok(current.clone())
        }
    });
    let keeper = LeaseKeeper::start(lease(1, Timestamp::now()), Arc::new(locks), config()).unwrap();

    // An endless feed: the processor only stops because the lease is lost.
    let mut feed = MockChangeFeed::new();
    feed.expect_watch()
        .returning(|_| Ok(futures::stream::iter((1..).map(|n| Ok(event(n)))).boxed()));
    let saves: Arc<Mutex<Vec<ResumeToken>>> = Arc::default();
    let mut checkpoints = MockCheckpointStore::new();
    checkpoints.expect_load().returning(|_| Ok(None));
    let sink = Arc::clone(&saves);
    checkpoints.expect_save().returning(move |_, t| {
        sink.lock().unwrap().push(t.clone());
        Ok(())
    });
    let ports = ProcessorPorts {
        feed: Arc::new(feed),
        checkpoints: Arc::new(checkpoints),
        dead_letters: Arc::new(MockRepository::<DeadLetter>::new()),
        clock: Arc::new(SystemClock),
    };
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let trigger = Arc::clone(&lose);
    let handler = move |_: ChangeEvent| {
        let count = Arc::clone(&count);
        let trigger = Arc::clone(&trigger);
        async move {
            if count.fetch_add(1, Ordering::SeqCst) == 10 {
                trigger.store(true, Ordering::SeqCst);
            }
            // Let the renewal task run between events.
            tokio::task::yield_now().await;
            Ok::<(), HandlerError>(())
        }
    };
    let mut config = ProcessorConfig::new("guarded", Item::schema(), StartFrom::Beginning);
    config.checkpoint = CheckpointPolicy {
        every_events: None,
        every: None,
    };

    let report = EventProcessor::new(config, ports, handler)
        .run(keeper.cancellation_token())
        .await
        .unwrap();

    assert!(keeper.is_lost());
    let handled = handled.load(Ordering::SeqCst);
    assert!(handled > 10);
    assert_eq!(report.stats.handled, handled);
    let saves = saves.lock().unwrap().clone();
    assert_eq!(
        saves,
        vec![ResumeToken::from_bytes(handled.to_be_bytes().to_vec())],
        "a graceful stop writes the checkpoint of the last handled event"
    );
}

#[tokio::test]
async fn keeper_drives_a_real_lease_through_renewals() {
    let store = MemoryStore::new(MemoryConfig::default());
    let locks = store.locks();
    let held = locks
        .try_acquire("compact", "worker-1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let keeper = LeaseKeeper::start(
        held.clone(),
        Arc::clone(&locks),
        LeaseKeeperConfig::new(Duration::from_secs(30), 0.001),
    )
    .unwrap();
    // Renewals happen every 30 ms; wait for one through the lease's expiry.
    while keeper.lease().expires_at() == held.expires_at() {
        tokio::task::yield_now().await;
    }
    assert_eq!(keeper.lease().token(), held.token());
    locks.check(&keeper.lease()).await.unwrap();
    keeper.release().await.unwrap();
    assert!(locks.current("compact").await.unwrap().is_none());
}

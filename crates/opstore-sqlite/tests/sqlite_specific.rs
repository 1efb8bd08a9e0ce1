//! SQLite-specific behaviour beyond the conformance suite: the database clock,
//! a second store on the same file, and the plain-SQL layout.

use std::time::Duration;

use futures::StreamExt;
use opstore_domain::{Entity, Repository, StartAt, Store, StoreExt, WatchRequest};
use opstore_sqlite::{SqliteConfig, SqliteStore};
use opstore_testkit::fixtures::{self, Item, item};
use sqlx::Row;

fn fresh_file() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("opstore-sqlite");
    dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()))
        .display()
        .to_string()
}

async fn open(file: &str) -> SqliteStore {
    let mut config = SqliteConfig::from_url(format!("sqlite://{file}"));
    config.feed_poll_interval = Duration::from_millis(20);
    let store = SqliteStore::connect(config).await.expect("open");
    store
        .migrate(&fixtures::schemas())
        .await
        .expect("migrate fixtures");
    store
}

#[tokio::test]
async fn a_second_store_on_the_same_file_sees_commits_by_polling() {
    let file = fresh_file();
    let writer = open(&file).await;
    let reader = open(&file).await;
    let mut feed = reader
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Now,
            filter: None,
        })
        .await
        .expect("watch");
    writer
        .repository::<Item>()
        .unwrap()
        .insert(&item("from-the-other-store").build())
        .await
        .expect("insert");
    let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the other store's commit arrives")
        .expect("open feed")
        .expect("event");
    assert_eq!(event.key, "from-the-other-store");
}

#[tokio::test]
async fn leases_expire_by_the_database_clock() {
    let store = open(&fresh_file()).await;
    let locks = store.locks();
    let first = locks
        .try_acquire("job", "a", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("free");
    // Outliving a 1 ms TTL on a clock nobody can move takes real time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = locks
        .try_acquire("job", "b", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("expired, so free");
    assert!(second.token() > first.token());
    assert!(
        locks
            .renew(&first, Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_lock_lost()
    );
    assert!(
        locks
            .try_acquire("job", "c", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn documents_are_readable_with_plain_sql() {
    let store = open(&fresh_file()).await;
    store
        .repository::<Item>()
        .unwrap()
        .insert(&item("a").name("widget").build())
        .await
        .unwrap();
    let row = sqlx::query("SELECT id, \"name\", doc ->> '$.name' FROM items")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "a");
    assert_eq!(row.get::<String, _>(1), "widget");
    assert_eq!(row.get::<String, _>(2), "widget");
}

#[tokio::test]
async fn migrating_again_applies_nothing() {
    let file = fresh_file();
    open(&file).await;
    let again = open(&file).await;
    let report = again.migrate(&fixtures::schemas()).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
}

#[tokio::test]
async fn an_in_memory_database_works_for_its_lifetime() {
    let store = SqliteStore::connect(SqliteConfig::from_url("sqlite::memory:"))
        .await
        .unwrap();
    store.migrate(&fixtures::schemas()).await.unwrap();
    let items = store.repository::<Item>().unwrap();
    items.insert(&item("m").build()).await.unwrap();
    assert!(items.get("m").await.unwrap().is_some());
}

#[tokio::test]
async fn a_transaction_dropped_halfway_leaves_nothing_and_the_store_writable() {
    let store = open(&fresh_file()).await;
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let run = opstore_domain::run_transaction(&store, Default::default(), |tx| {
        let started = std::sync::Arc::clone(&started);
        async move {
            opstore_domain::TxExt::repository::<Item>(&tx)?
                .insert(&item("half").build())
                .await?;
            started.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    tokio::select! {
        outcome = run => panic!("the transaction cannot finish: {outcome:?}"),
        () = started.notified() => {}
    }
    // The transaction's future is gone with its write in flight; the next
    // write rolls it back and goes ahead.
    let items = store.repository::<Item>().unwrap();
    items.insert(&item("after").build()).await.unwrap();
    assert!(items.get("half").await.unwrap().is_none());
    assert!(items.get("after").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_writing_one_file_take_turns_and_lose_nothing() {
    let file = fresh_file();
    let (a, b) = (open(&file).await, open(&file).await);
    let write = |store: SqliteStore, prefix: &'static str| async move {
        let items = store.repository::<Item>().unwrap();
        for i in 0..50 {
            items
                .insert(&item(&format!("{prefix}{i:02}")).build())
                .await
                .unwrap();
        }
    };
    tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    let items = a.repository::<Item>().unwrap();
    assert_eq!(
        items.count(&opstore_domain::Filter::all()).await.unwrap(),
        100
    );
    let mut feed = b
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Beginning,
            filter: None,
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    while keys.len() < 100 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("the whole history arrives")
            .unwrap()
            .unwrap();
        keys.push(event.key);
    }
    // Each store's own inserts appear in the order it made them.
    for prefix in ["a", "b"] {
        let own: Vec<&String> = keys.iter().filter(|k| k.starts_with(prefix)).collect();
        assert_eq!(own.len(), 50);
        assert!(own.windows(2).all(|w| w[0] < w[1]), "{own:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_contended_by_two_stores_on_one_file_has_one_holder() {
    let file = fresh_file();
    let (a, b) = (open(&file).await, open(&file).await);
    let ttl = Duration::from_secs(30);
    let (la, lb) = (a.locks(), b.locks());
    let (x, y) = tokio::join!(
        la.try_acquire("drain", "a", ttl),
        lb.try_acquire("drain", "b", ttl)
    );
    let holders = [x.unwrap(), y.unwrap()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    assert_eq!(holders.len(), 1, "{holders:?}");
}

//! Writes to a collection kept out of the change feed leave the retained
//! history of watched collections alone.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::StreamExt;
use opstore_domain::{
    Entity, Field, FieldType, Filter, ManualClock, Repository, Schema, StartAt, Store, StoreExt,
    Timestamp, TxExt, TxOptions, WatchRequest, run_transaction,
};
use opstore_memory::{FeedRetention, MemoryConfig, MemoryStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watched {
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    id: String,
}

static WATCHED: LazyLock<Schema> = LazyLock::new(|| Schema::builder("watched", "id").build());

static QUEUED: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("queued", "id")
        .field(Field::new("state", FieldType::String).optional())
        .without_change_feed()
        .build()
});

impl Entity for Watched {
    fn schema() -> &'static Schema {
        &WATCHED
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

impl Entity for Queued {
    fn schema() -> &'static Schema {
        &QUEUED
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[tokio::test]
async fn unwatched_writes_do_not_push_watched_history_out() {
    let store = MemoryStore::new(MemoryConfig {
        clock: Arc::new(ManualClock::new(Timestamp::now())),
        feed_retention: FeedRetention {
            max_age: Duration::from_secs(3600),
            max_entries: 3,
        },
    });
    store.migrate(&[&WATCHED, &QUEUED]).await.unwrap();
    let watched = store.repository::<Watched>().unwrap();
    let queued = store.repository::<Queued>().unwrap();
    let w = |id: &str| Watched { id: id.into() };
    watched.insert(&w("w1")).await.unwrap();
    watched.insert(&w("w2")).await.unwrap();

    // Far more queue writes than the log retains, in and out of a transaction.
    for i in 0..10 {
        queued
            .insert(&Queued {
                id: format!("q{i}"),
            })
            .await
            .unwrap();
    }
    run_transaction(&store, TxOptions::default(), |tx| async move {
        tx.repository::<Queued>()?
            .insert(&Queued { id: "q-tx".into() })
            .await
    })
    .await
    .unwrap();
    watched.insert(&w("w3")).await.unwrap();

    let mut stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: &WATCHED,
            start: StartAt::Beginning,
            filter: None,
        })
        .await
        .unwrap();
    // Each event is already retained, so none of these waits.
    for expected in ["w1", "w2", "w3"] {
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.key, expected);
    }
    assert_eq!(queued.count(&Filter::All).await.unwrap(), 11);
}

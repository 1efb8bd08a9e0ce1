//! Store-level behaviour through the recording fake of the seam.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::{
    Begin, Filter, ManualClock, Query, Store, Timestamp, TxOptions, Update, json,
};
use opstore_domain::{Field, FieldType, Schema};
use std::sync::LazyLock;

use crate::fake::{FakeSession, applied_row};
use crate::value::{Consistency, CqlValue, Row};
use crate::{Flavour, ScanPolicy, ScyllaConfig, ScyllaStore};

static ITEMS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("items", "id")
        .field(Field::new("name", FieldType::String).indexed())
        .field(Field::new("count", FieldType::Int))
        .build()
});

fn store() -> (ScyllaStore, Arc<FakeSession>, ManualClock) {
    let fake = Arc::new(FakeSession::default());
    let clock = ManualClock::new(Timestamp::from_micros(1_000_000_000));
    let mut config = ScyllaConfig::new(&["127.0.0.1"], "ks");
    config.retries = 0;
    let store = ScyllaStore::with_session(
        config,
        fake.clone(),
        Flavour::Scylla,
        Arc::new(clock.clone()),
    );
    (store, fake, clock)
}

fn doc_row(doc: &str) -> Row {
    Row::from_pairs(vec![
        ("id", CqlValue::Text("a".into())),
        ("doc", CqlValue::Text(doc.into())),
    ])
}

#[tokio::test]
async fn insert_is_an_lwt_and_not_applied_is_a_conflict() {
    let (store, fake, _) = store();
    let items = store.collection(&ITEMS).unwrap();
    items
        .insert(json!({"id": "a", "name": "n", "count": 1}))
        .await
        .unwrap();
    let call = &fake.calls()[0];
    assert!(call.cql.ends_with("IF NOT EXISTS"), "{}", call.cql);
    assert_eq!(call.serial, Some(Consistency::LocalSerial));
    assert_eq!(call.consistency, Consistency::Quorum);
    let mut not_applied = applied_row(false);
    not_applied = Row::from_pairs(vec![
        ("[applied]", not_applied.get("[applied]").unwrap().clone()),
        (
            "doc",
            CqlValue::Text(r#"{"id":"a","name":"n","count":1}"#.into()),
        ),
    ]);
    fake.answer("INSERT INTO ks.items", Ok(vec![not_applied]));
    let err = items
        .insert(json!({"id": "a", "name": "n", "count": 1}))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
}

#[tokio::test]
async fn get_maps_the_row_and_update_is_a_compare_and_set() {
    let (store, fake, _) = store();
    let items = store.collection(&ITEMS).unwrap();
    let stored = r#"{"id":"a","name":"n","count":1}"#;
    fake.answer("SELECT", Ok(vec![doc_row(stored)]));
    assert_eq!(
        items.get("a").await.unwrap(),
        Some(json!({"id": "a", "name": "n", "count": 1}))
    );
    fake.answer("SELECT", Ok(vec![doc_row(stored)]));
    let doc = items
        .update_one("a", &Update::new().inc("count", 2))
        .await
        .unwrap();
    assert_eq!(doc["count"], json!(3));
    let cas = fake
        .calls()
        .into_iter()
        .find(|c| c.cql.starts_with("UPDATE"))
        .unwrap();
    assert!(cas.cql.ends_with("IF doc = ?"));
    assert_eq!(cas.values.last(), Some(&CqlValue::Text(stored.into())));
    assert!(
        items
            .update_one("zz", &Update::new().inc("count", 1))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn unserved_filters_are_unsupported_and_indexed_ones_are_served() {
    let (store, fake, _) = store();
    let items = store.collection(&ITEMS).unwrap();
    let err = items
        .find(&Query::filter(Filter::gt("count", 1)))
        .await
        .unwrap_err();
    assert!(
        err.is_unsupported() && err.to_string().contains("declare `count` indexed"),
        "{err}"
    );
    assert!(
        items
            .count(&Filter::All)
            .await
            .unwrap_err()
            .is_unsupported()
    );
    assert!(fake.calls().is_empty(), "nothing reached the server");
    fake.answer(
        "WHERE \"name\" = ?",
        Ok(vec![doc_row(r#"{"id":"a","name":"n","count":1}"#)]),
    );
    let found = items
        .find(&Query::filter(
            Filter::eq("name", "n").and(Filter::gt("count", 0)),
        ))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn bounded_scans_allow_filtering_and_stop_at_max_rows() {
    let fake = Arc::new(FakeSession::default());
    let mut config = ScyllaConfig::new(&["h"], "ks");
    config.scan_policy = ScanPolicy::Bounded { max_rows: 1 };
    let store = ScyllaStore::with_session(
        config,
        fake.clone(),
        Flavour::Scylla,
        Arc::new(ManualClock::new(Timestamp::from_micros(0))),
    );
    let items = store.collection(&ITEMS).unwrap();
    fake.answer(
        "ALLOW FILTERING",
        Ok(vec![doc_row(r#"{"id":"a","name":"n","count":5}"#)]),
    );
    assert_eq!(items.count(&Filter::gt("count", 1)).await.unwrap(), 1);
    assert!(
        fake.calls()[0]
            .cql
            .ends_with("WHERE \"count\" > ? ALLOW FILTERING")
    );
    let two = vec![
        doc_row(r#"{"id":"a","name":"n","count":5}"#),
        doc_row(r#"{"id":"b","name":"n","count":5}"#),
    ];
    fake.answer("ALLOW FILTERING", Ok(two));
    let err = items.count(&Filter::gt("count", 1)).await.unwrap_err();
    assert!(
        err.is_unsupported() && err.to_string().contains("max_rows = 1"),
        "{err}"
    );
}

#[tokio::test]
async fn transactions_are_unsupported_and_capabilities_say_so() {
    let (store, _, _) = store();
    let work = |_tx| -> futures::future::BoxFuture<'static, opstore_domain::Result<()>> {
        Box::pin(async { Ok(()) })
    };
    let err = store
        .transaction(TxOptions::default(), &work)
        .await
        .unwrap_err();
    assert!(err.is_unsupported());
    let caps = store.capabilities();
    assert!(!caps.transactions && caps.change_feed && !caps.filter_any_field);
    assert_eq!(caps.change_feed_order, "partition");
}

#[tokio::test]
async fn lease_acquisition_bumps_the_fence_in_a_conditional_batch() {
    let (store, fake, _) = store();
    fake.answer(
        "SELECT fence",
        Ok(vec![Row::from_pairs(vec![
            ("fence", CqlValue::BigInt(4)),
            ("owner", CqlValue::Null),
            ("token", CqlValue::Null),
            ("expires_at", CqlValue::Null),
        ])]),
    );
    let lease = store
        .locks()
        .try_acquire("job-1", "w1", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.token(), 5);
    let calls = fake.calls();
    assert_eq!(
        calls[0].consistency,
        Consistency::LocalSerial,
        "serial read"
    );
    assert!(
        calls[1]
            .cql
            .contains("SET fence = ? WHERE name = ? IF fence = ? AND owner = null")
    );
    assert_eq!(
        calls[1].values,
        vec![
            CqlValue::BigInt(5),
            CqlValue::Text("job-1".into()),
            CqlValue::BigInt(4)
        ]
    );
    assert!(calls[2].cql.contains("USING TTL ?"));
    fake.answer(
        "UPDATE ks.opstore_leases USING TTL",
        Ok(vec![applied_row(false)]),
    );
    assert!(
        store
            .locks()
            .renew(&lease, Duration::from_secs(5))
            .await
            .unwrap_err()
            .is_lock_lost()
    );
}

#[tokio::test]
async fn idempotency_begin_reads_the_existing_record() {
    let (store, fake, _) = store();
    assert_eq!(
        store
            .idempotency()
            .begin("k", "f", Duration::from_secs(60))
            .await
            .unwrap(),
        Begin::Started
    );
    let far = Timestamp::now().add(Duration::from_secs(600)).as_millis();
    fake.answer(
        "INSERT INTO ks.opstore_idempotency",
        Ok(vec![Row::from_pairs(vec![
            ("[applied]", CqlValue::Boolean(false)),
            ("fingerprint", CqlValue::Text("f".into())),
            ("response", CqlValue::Text("{\"ok\":1}".into())),
            ("expires_at", CqlValue::Timestamp(far)),
        ])]),
    );
    assert_eq!(
        store
            .idempotency()
            .begin("k", "f", Duration::from_secs(60))
            .await
            .unwrap(),
        Begin::Completed(json!({"ok": 1}))
    );
}

#[tokio::test]
async fn health_opens_the_breaker_after_repeated_failures() {
    let (store, fake, clock) = store();
    for _ in 0..3 {
        fake.answer(
            "system.local",
            Err(crate::DriverError::Connection("refused".into())),
        );
        assert!(store.health().await.unwrap_err().is_connection());
    }
    let before = fake.calls().len();
    let err = store.health().await.unwrap_err();
    assert!(err.to_string().contains("circuit open"), "{err}");
    assert_eq!(fake.calls().len(), before, "no probe while open");
    clock.advance(Duration::from_secs(30));
    store.health().await.unwrap();
    assert_eq!(
        store.breaker().state(),
        crate::BreakerState::Closed { failures: 0 }
    );
}

#[tokio::test]
async fn migrate_creates_what_is_missing_and_waits_for_agreement() {
    let (store, fake, _) = store();
    let report = store.migrate(&[&ITEMS]).await.unwrap();
    assert!(
        report.applied.contains(&"keyspace ks".to_owned()),
        "{report:?}"
    );
    assert!(report.applied.contains(&"table items".to_owned()));
    assert!(report.applied.contains(&"index items_name_idx".to_owned()));
    let calls = fake.calls();
    assert_eq!(calls.last().unwrap().cql, "AWAIT SCHEMA AGREEMENT");
    assert!(
        calls
            .iter()
            .any(|c| c.cql.contains("WITH cdc = {'enabled': true"))
    );
}

#[tokio::test]
async fn flavour_is_scylla_only_where_system_scylla_local_exists() {
    let fake = FakeSession::default();
    fake.answer(
        "system_schema.tables",
        Ok(vec![Row::from_pairs(vec![(
            "table_name",
            CqlValue::Text("scylla_local".into()),
        )])]),
    );
    fake.answer("system_schema.tables", Ok(Vec::new()));
    assert_eq!(Flavour::detect(&fake).await.unwrap(), Flavour::Scylla);
    assert_eq!(Flavour::detect(&fake).await.unwrap(), Flavour::Cassandra);
    let call = &fake.calls()[0];
    assert_eq!(
        call.values,
        [
            CqlValue::Text("system".into()),
            CqlValue::Text("scylla_local".into())
        ]
    );
}

#[tokio::test]
async fn cassandra_reports_no_change_feed_and_refuses_watch_naming_the_capability() {
    let fake = Arc::new(FakeSession::default());
    let store = ScyllaStore::with_session(
        ScyllaConfig::new(&["h"], "ks"),
        fake.clone(),
        Flavour::Cassandra,
        Arc::new(ManualClock::new(Timestamp::from_micros(0))),
    );
    let caps = store.capabilities();
    assert!(!caps.change_feed);
    assert!(
        caps.notes.iter().any(|n| n.contains("Cassandra")),
        "{caps:?}"
    );
    let err = store
        .change_feed()
        .watch(opstore_domain::WatchRequest {
            schema: &ITEMS,
            start: opstore_domain::StartAt::Now,
            filter: None,
        })
        .await
        .err()
        .unwrap();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("change_feed"), "{err}");
    assert!(fake.calls().is_empty(), "nothing reaches the server");
}

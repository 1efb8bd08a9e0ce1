//! MongoDB-specific behaviour beyond the shared suite: resume after a watcher
//! restart, server-side history loss, operator injection, the 16 MiB limit and
//! write conflicts inside transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{Bson, Document, doc};
use opstore_domain::{
    ChangeStream, Filter, Repository, ResumeToken, StartAt, Store, StoreExt, TxExt, TxOptions,
    Update, WatchRequest, json,
};
use opstore_mongo::{MongoConfig, MongoStore};
use opstore_testkit::fixtures::{self, Item, item};

/// Whether the server is there; otherwise the calling test reports itself
/// skipped (a failure under CI) and returns.
fn server_present() -> bool {
    opstore_testkit::require_server("mongo", "OPSTORE_MONGODB_URL").is_some()
}

fn url() -> String {
    std::env::var("OPSTORE_MONGODB_URL")
        .expect("OPSTORE_MONGODB_URL must name a MongoDB replica set (cargo xtask test sets it)")
}

async fn store() -> MongoStore {
    let config = MongoConfig::new(url(), format!("m_{}", uuid::Uuid::new_v4().simple()));
    let store = MongoStore::connect(config).await.unwrap();
    store.migrate(&fixtures::schemas()).await.unwrap();
    store
}

async fn watch(store: &MongoStore, start: StartAt) -> opstore_domain::Result<ChangeStream> {
    store
        .change_feed()
        .watch(WatchRequest {
            schema: <Item as opstore_domain::Entity>::schema(),
            start,
            filter: None,
        })
        .await
}

async fn next_key(stream: &mut ChangeStream) -> (String, ResumeToken) {
    let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a change event within 30 s")
        .expect("the stream is open")
        .unwrap();
    (event.key, event.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_after_watcher_restart_loses_nothing() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let checkpoints = store.checkpoints();
    let mut stream = watch(&store, StartAt::Now).await.unwrap();
    for id in ["a", "b", "c"] {
        repo.insert(&item(id).build()).await.unwrap();
    }
    let (first, token) = next_key(&mut stream).await;
    assert_eq!(first, "a");
    checkpoints.save("restart-test", &token).await.unwrap();
    drop(stream);
    // Written while no watcher runs.
    repo.insert(&item("d").build()).await.unwrap();
    repo.update_one("b", &Update::new().inc("count", 1))
        .await
        .unwrap();
    repo.delete("c").await.unwrap();

    let token = checkpoints
        .load("restart-test")
        .await
        .unwrap()
        .expect("stored token");
    let token: ResumeToken = token.to_string().parse().unwrap();
    let mut stream = watch(&store, StartAt::After(token)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_key(&mut stream).await.0);
    }
    assert_eq!(seen, ["b", "c", "d", "b", "c"]);
}

/// Rewrites the server part of a token so it points before the oldest oplog
/// entry: SecantusDB tokens hold a BSON sequence number `s`; MongoDB's hold a
/// key-string whose first value (type byte 0x82) is the cluster time.
fn aged(token: &ResumeToken) -> ResumeToken {
    let bytes = token.as_bytes();
    let mut server = Document::from_reader(&bytes[9..]).unwrap();
    let data = server.get_str("_data").unwrap().to_owned();
    let mut raw: Vec<u8> = (0..data.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&data[i..i + 2], 16).unwrap())
        .collect();
    let rewritten = match Document::from_reader(raw.as_slice()) {
        Ok(mut inner) if inner.contains_key("s") => {
            inner.insert("s", Bson::Int64(0));
            let mut out = Vec::new();
            inner.to_writer(&mut out).unwrap();
            out
        }
        _ => {
            assert_eq!(raw[0], 0x82, "unknown resume token layout");
            raw[1..9].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            raw
        }
    };
    let hex: String = rewritten.iter().map(|b| format!("{b:02X}")).collect();
    server.insert("_data", hex);
    let mut out = bytes[..9].to_vec();
    server.to_writer(&mut out).unwrap();
    ResumeToken::from_bytes(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_older_than_the_oplog_is_resume_token_expired() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch(&store, StartAt::Now).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    let (_, token) = next_key(&mut stream).await;
    drop(stream);
    let err = match watch(&store, StartAt::After(aged(&token))).await {
        Err(e) => e,
        Ok(mut s) => tokio::time::timeout(Duration::from_secs(30), s.next())
            .await
            .expect("an item within 30 s")
            .expect("an error item")
            .unwrap_err(),
    };
    assert!(err.is_resume_token_expired(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_token_is_validation() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let err = watch(
        &store,
        StartAt::After(ResumeToken::from_bytes(vec![1, 2, 3])),
    )
    .await
    .err()
    .unwrap();
    assert!(err.is_validation(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_values_are_stored_and_matched_as_data() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let evil = json!({"$where": "sleep(10000) || true", "$gt": ""});
    repo.insert(&item("a").meta(evil.clone()).note("$ne").build())
        .await
        .unwrap();
    repo.insert(&item("b").meta(json!({"x": 1})).note("plain").build())
        .await
        .unwrap();
    assert_eq!(
        repo.get("a").await.unwrap().unwrap().meta,
        Some(evil.clone())
    );
    // An operator-shaped value compares literally: it matches only the equal document.
    let hits = repo
        .find(&opstore_domain::Query::filter(Filter::eq("meta", evil)))
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let hits = repo
        .find(&opstore_domain::Query::filter(Filter::eq(
            "meta",
            json!({"$ne": null}),
        )))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    let hits = repo
        .find(&opstore_domain::Query::filter(Filter::eq("note", "$ne")))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    let hits = repo
        .find(&opstore_domain::Query::filter(Filter::contains_ci(
            "note", ".*",
        )))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    // Raw storage holds the literal keys.
    let raw = store
        .database()
        .collection::<Document>("items")
        .find_one(doc! { "_id": "a" })
        .await
        .unwrap()
        .unwrap();
    assert!(raw.get_document("meta").unwrap().contains_key("$where"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_field_names_are_validation_errors() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    for path in [
        "$where",
        "name.$gt",
        "meta.$ne",
        "status.$[]",
        "meta..x",
        "$expr",
    ] {
        let err = repo.count(&Filter::eq(path, 1)).await.unwrap_err();
        assert!(err.is_validation(), "{path}: {err}");
        let err = repo
            .update_many(&Filter::all(), &Update::new().set(path, 1))
            .await
            .unwrap_err();
        assert!(err.is_validation(), "{path}: {err}");
    }
    let err = repo
        .update_one(
            "a",
            &Update::new().set("meta", json!({"k": {"$inc": {"count": 1}}})),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("$inc"),
        "{err}"
    );
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn document_over_16_mib_is_a_clear_validation_error() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let big = "x".repeat(16 * 1024 * 1024);
    let err = repo
        .insert(&item("big").note(&big).build())
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("16 MiB") && text.contains("`big`") && text.contains("items"),
        "{text}"
    );
    assert_eq!(repo.get("big").await.unwrap(), None);
    let err = repo
        .insert_many(&[item("ok").build(), item("big2").note(&big).build()])
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.get("ok").await.unwrap(), None);
    // Just under the limit is stored.
    let near = "y".repeat(15 * 1024 * 1024);
    repo.insert(&item("near").note(&near).build())
        .await
        .unwrap();
    assert_eq!(
        repo.get("near")
            .await
            .unwrap()
            .unwrap()
            .note
            .map(|n| n.len()),
        Some(near.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn persistent_write_conflict_is_retried_then_conflict() {
    if !server_present() {
        return;
    }
    let store = Arc::new(store().await);
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("hot").build()).await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let options = TxOptions {
        max_retries: 2,
        ..TxOptions::default()
    };
    let outside = repo.clone();
    let counter = Arc::clone(&attempts);
    let err = opstore_domain::run_transaction(&*store, options, move |tx| {
        let outside = outside.clone();
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let items = tx.repository::<Item>()?;
            // The transaction reads (its snapshot starts), a writer outside
            // commits to the same document, then the transaction writes it.
            items.get("hot").await?;
            outside
                .update_one("hot", &Update::new().inc("count", 1))
                .await?;
            items
                .update_one("hot", &Update::new().set("name", "tx"))
                .await?;
            Ok(())
        }
    })
    .await
    .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "first run plus two retries"
    );
    let doc = repo.get("hot").await.unwrap().unwrap();
    assert_eq!((doc.count, doc.name.as_str()), (3, "name-hot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_is_idempotent_and_reports_a_replica_set() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let again = store.migrate(&fixtures::schemas()).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    let caps = store.capabilities();
    assert!(caps.transactions && caps.change_feed, "{caps:?}");
    let health = store.health().await.unwrap();
    assert!(health.server.contains("replica set"), "{}", health.server);
    let names: Vec<String> = store
        .database()
        .collection::<Document>("items")
        .list_index_names()
        .await
        .unwrap();
    assert!(names.contains(&"opstore_sku".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_domain_entity_migrates_twice() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let schemas = opstore_domain::entities::all_schemas();
    let first = store.migrate(&schemas).await.unwrap();
    assert!(!first.applied.is_empty());
    let second = store.migrate(&schemas).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
}

/// Updates that MongoDB's operators would apply unlike the reference (here an
/// `inc` inside an optional `Json` value) run in process inside transactions;
/// concurrent ones conflict, rerun and lose no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_in_process_updates_lose_nothing() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let items = store
        .collection(<Item as opstore_domain::Entity>::schema())
        .unwrap();
    let repo = store.repository::<Item>().unwrap();
    repo.insert_many(&[item("a").build(), item("b").build()])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let items = Arc::clone(&items);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    items
                        .update_one("a", &Update::new().inc("meta.n", 1))
                        .await
                        .map(drop)
                } else {
                    items
                        .update_many(&Filter::all(), &Update::new().inc("meta.n", 1))
                        .await
                        .map(|n| assert_eq!((n.matched, n.modified), (2, 2)))
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let a = items.get("a").await.unwrap().unwrap();
    let b = items.get("b").await.unwrap().unwrap();
    assert_eq!(a["meta"]["n"], json!(10), "{a}");
    assert_eq!(b["meta"]["n"], json!(5), "{b}");
}

/// An update applied in process is still an update to change-feed readers, and
/// follows the reference on null, scalar and non-array values; a refused one
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_updates_are_update_events_and_checked() {
    if !server_present() {
        return;
    }
    let store = store().await;
    let items = store
        .collection(<Item as opstore_domain::Entity>::schema())
        .unwrap();
    let repo = store.repository::<Item>().unwrap();
    // The stream opens before the insert, so the feed shows the insert and then
    // exactly the two in-process updates.
    let mut stream = watch(&store, StartAt::Now).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    let updated = items
        .update_one("a", &Update::new().set("meta", json!(5)).push("roles", "r"))
        .await
        .unwrap();
    assert_eq!(updated["roles"], json!(["r"]));
    let updated = items
        .update_one("a", &Update::new().set("meta.x.y", 1))
        .await
        .unwrap();
    assert_eq!(updated["meta"], json!({ "x": { "y": 1 } }));
    for expected in [
        opstore_domain::ChangeOp::Insert,
        opstore_domain::ChangeOp::Update,
        opstore_domain::ChangeOp::Update,
    ] {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a change event within 30 s")
            .expect("the stream is open")
            .unwrap();
        assert_eq!(event.op, expected);
    }
    // `meta` is an object: counted from 0 and overwritten, as in the reference.
    items
        .update_one("a", &Update::new().set("labels.team", "t").inc("meta", 1))
        .await
        .unwrap();
    let err = items
        .update_many(
            &Filter::all(),
            &Update::new()
                .set("meta.x", 1)
                .push("roles", "s")
                .set("status", json!({})),
        )
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(err.to_string().contains("status.state"), "{err}");
    let again = items.get("a").await.unwrap().unwrap();
    assert_eq!(again["meta"], json!(1), "nothing written: {again}");
    assert_eq!(again["roles"], json!(["r"]), "nothing written: {again}");
}

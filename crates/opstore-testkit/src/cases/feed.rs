//! The change feed: order, filters, start positions, resume without duplicates,
//! expired tokens, and the token's text form.

use std::time::Duration;

use opstore_domain::{
    ChangeOp, Entity, Filter, ResumeToken, StartAt, StoreExt, TxExt, TxOptions, Update,
    WatchRequest, json, run_transaction,
};

use crate::Harness;
use crate::fixtures::{
    Item, Ticket, event_keys, events_until, first_watch_result, item, lacks_change_feed,
    lacks_transactions, next_event, next_events, store_now, strs, ticket, watch_items,
};

use opstore_domain::Repository;

/// Insert, update, replace and delete arrive in order with their kinds.
pub async fn feed_delivers_every_kind_in_order(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.update_one("a", &Update::new().inc("count", 1))
        .await
        .unwrap();
    repo.replace(&item("a").count(7).build()).await.unwrap();
    repo.delete("a").await.unwrap();
    let ops: Vec<ChangeOp> = next_events(&mut stream, 4)
        .await
        .iter()
        .map(|e| e.op)
        .collect();
    assert_eq!(
        ops,
        [
            ChangeOp::Insert,
            ChangeOp::Update,
            ChangeOp::Replace,
            ChangeOp::Delete
        ]
    );
}

/// Events carry the collection, the key and the document after the change.
pub async fn feed_events_carry_key_and_document_after_change(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    repo.update_one("a", &Update::new().inc("count", 41))
        .await
        .unwrap();
    let events = next_events(&mut stream, 2).await;
    assert!(
        events
            .iter()
            .all(|e| e.collection == "items" && e.key == "a"),
        "{events:?}"
    );
    assert_eq!(events[0].document.as_ref().unwrap()["count"], json!(1));
    assert_eq!(events[1].document.as_ref().unwrap()["count"], json!(42));
}

/// A delete event has no document.
pub async fn feed_delete_event_has_no_document(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.delete("a").await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.op, event.key.as_str(), event.document),
        (ChangeOp::Delete, "a", None)
    );
}

/// `delete_many` yields one delete event per removed document.
pub async fn feed_delete_many_yields_one_event_per_document(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    for id in ["a", "b", "c"] {
        repo.insert(&item(id).count(1).build()).await.unwrap();
    }
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    assert_eq!(repo.delete_many(&Filter::eq("count", 1)).await.unwrap(), 3);
    repo.insert(&item("z-sentinel").build()).await.unwrap();
    let events = events_until(&mut stream, "z-sentinel").await;
    let mut deleted: Vec<String> = events
        .iter()
        .filter(|e| e.op == ChangeOp::Delete)
        .map(|e| e.key.clone())
        .collect();
    deleted.sort();
    assert_eq!(deleted, strs(&["a", "b", "c"]));
    assert_eq!(events.len(), 4);
}

/// Events of many writes arrive in commit order.
pub async fn feed_preserves_commit_order(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    let ids: Vec<String> = (0..30).map(|i| format!("k{:02}", (i * 11) % 30)).collect();
    for id in &ids {
        repo.insert(&item(id).build()).await.unwrap();
    }
    assert_eq!(event_keys(&next_events(&mut stream, 30).await), ids);
}

/// `insert_many` yields one insert event per document.
pub async fn feed_insert_many_yields_one_event_per_document(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert_many(&[item("a").build(), item("b").build(), item("c").build()])
        .await
        .unwrap();
    let events = next_events(&mut stream, 3).await;
    let mut got = event_keys(&events);
    got.sort();
    assert_eq!(got, strs(&["a", "b", "c"]));
    assert!(events.iter().all(|e| e.op == ChangeOp::Insert));
}

/// Watching from `Now` delivers nothing committed before the watch started.
pub async fn feed_from_now_skips_earlier_changes(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("before").build()).await.unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("after").build()).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key, "after");
}

/// Watching from `Beginning` delivers the retained history first.
pub async fn feed_from_beginning_replays_history(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    repo.update_one("a", &Update::new().set("note", "x"))
        .await
        .unwrap();
    let mut stream = watch_items(&*store, StartAt::Beginning, None)
        .await
        .unwrap();
    let events = next_events(&mut stream, 3).await;
    assert_eq!(event_keys(&events), strs(&["a", "b", "a"]));
    assert_eq!(events[2].op, ChangeOp::Update);
    repo.insert(&item("c").build()).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key, "c");
}

/// Resuming after a token delivers exactly the events after it.
pub async fn feed_resumes_right_after_token(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        repo.insert(&item(id).build()).await.unwrap();
    }
    let events = next_events(&mut stream, 5).await;
    drop(stream);
    let mut resumed = watch_items(&*store, StartAt::After(events[2].token.clone()), None)
        .await
        .unwrap();
    repo.insert(&item("z-sentinel").build()).await.unwrap();
    assert_eq!(
        event_keys(&events_until(&mut resumed, "z-sentinel").await),
        strs(&["e4", "e5", "z-sentinel"])
    );
}

/// Resuming after the last seen event delivers no duplicate of it or earlier ones.
pub async fn feed_resume_delivers_no_duplicates(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.update_one("a", &Update::new().inc("count", 1))
        .await
        .unwrap();
    let last = next_events(&mut stream, 2).await.pop().unwrap();
    drop(stream);
    repo.update_one("a", &Update::new().inc("count", 1))
        .await
        .unwrap();
    repo.insert(&item("z-sentinel").build()).await.unwrap();
    let mut resumed = watch_items(&*store, StartAt::After(last.token.clone()), None)
        .await
        .unwrap();
    let events = events_until(&mut resumed, "z-sentinel").await;
    assert_eq!(event_keys(&events), strs(&["a", "z-sentinel"]));
    assert_eq!(events[0].document.as_ref().unwrap()["count"], json!(2));
    assert!(events.iter().all(|e| e.token != last.token));
}

/// Changes made while no one watched are delivered on resume.
pub async fn feed_resume_delivers_changes_made_while_away(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("seen").build()).await.unwrap();
    let token = next_event(&mut stream).await.token;
    drop(stream);
    for id in ["away1", "away2", "away3"] {
        repo.insert(&item(id).build()).await.unwrap();
    }
    let mut resumed = watch_items(&*store, StartAt::After(token), None)
        .await
        .unwrap();
    assert_eq!(
        event_keys(&next_events(&mut resumed, 3).await),
        strs(&["away1", "away2", "away3"])
    );
}

/// A filtered watch delivers only events whose document matches.
pub async fn feed_filter_delivers_only_matches(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let filter = Filter::eq("status.state", "failed");
    let mut stream = watch_items(&*store, StartAt::Now, Some(filter))
        .await
        .unwrap();
    repo.insert(&item("ok1").state("ok").build()).await.unwrap();
    repo.insert(&item("bad1").state("failed").build())
        .await
        .unwrap();
    repo.insert(&item("ok2").state("ok").build()).await.unwrap();
    repo.update_one("ok1", &Update::new().set("status.state", "failed"))
        .await
        .unwrap();
    repo.insert(&item("bad2").state("failed").build())
        .await
        .unwrap();
    let events = next_events(&mut stream, 3).await;
    assert_eq!(event_keys(&events), strs(&["bad1", "ok1", "bad2"]));
    assert_eq!(events[1].op, ChangeOp::Update);
}

/// A filtered watch does not deliver deletes (they carry no document).
pub async fn feed_filtered_watch_skips_deletes(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, Some(Filter::eq("count", 1)))
        .await
        .unwrap();
    repo.delete("a").await.unwrap();
    repo.insert(&item("b").count(1).build()).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!((event.key.as_str(), event.op), ("b", ChangeOp::Insert));
}

/// A watch on one collection sees nothing of another.
pub async fn feed_is_per_collection(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let items = store.repository::<Item>().unwrap();
    let tickets = store.repository::<Ticket>().unwrap();
    let now = store_now(&*store).await;
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    tickets.insert(&ticket("t", "o", 1, now)).await.unwrap();
    items.insert(&item("i").build()).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.collection.as_str(), event.key.as_str()),
        ("items", "i")
    );
    let mut ticket_stream = store
        .change_feed()
        .watch(WatchRequest {
            schema: Ticket::schema(),
            start: StartAt::Beginning,
            filter: None,
        })
        .await
        .unwrap();
    let event = next_event(&mut ticket_stream).await;
    assert_eq!(
        (event.collection.as_str(), event.key.as_str()),
        ("tickets", "t")
    );
}

/// Two watchers each receive every event.
pub async fn feed_delivers_to_every_watcher(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut first = watch_items(&*store, StartAt::Now, None).await.unwrap();
    let mut second = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    assert_eq!(
        event_keys(&next_events(&mut first, 2).await),
        strs(&["a", "b"])
    );
    assert_eq!(
        event_keys(&next_events(&mut second, 2).await),
        strs(&["a", "b"])
    );
}

/// Event timestamps never go backwards.
pub async fn feed_event_times_are_monotonic(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    for i in 0..10 {
        repo.insert(&item(&format!("k{i}")).build()).await.unwrap();
    }
    let events = next_events(&mut stream, 10).await;
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "{events:?}");
}

/// The feed retention the expired-token case asks for: long enough that the
/// history it reads is still there while it runs, short enough to wait out.
const SHORT_RETENTION: Duration = Duration::from_secs(4);

/// A token older than the retained history is `ResumeTokenExpired`.
pub async fn feed_expired_token_is_resume_token_expired(h: &impl Harness) {
    let (store, retention) = h.store_with_feed_retention(SHORT_RETENTION).await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("old1").build()).await.unwrap();
    repo.insert(&item("old2").build()).await.unwrap();
    let token = next_event(&mut stream).await.token;
    drop(stream);
    h.advance(retention + Duration::from_secs(5)).await;
    repo.insert(&item("new").build()).await.unwrap();
    let err = first_watch_result(watch_items(&*store, StartAt::After(token), None).await)
        .await
        .unwrap_err();
    assert!(err.is_resume_token_expired(), "{err}");
}

/// A token's text form parses back to the same token, which resumes the same way.
pub async fn feed_token_text_round_trips(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    let token = next_event(&mut stream).await.token;
    drop(stream);
    let text = token.to_string();
    let parsed: ResumeToken = text.parse().unwrap();
    assert_eq!(parsed, token);
    let json = serde_json::to_string(&token).unwrap();
    assert_eq!(serde_json::from_str::<ResumeToken>(&json).unwrap(), token);
    let mut resumed = watch_items(&*store, StartAt::After(parsed), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut resumed).await.key, "b");
}

/// Text that is not a token's form is `Validation`.
pub async fn feed_malformed_token_text_is_validation(_h: &impl Harness) {
    for text in ["xyz", "abc", "0g"] {
        let err = text.parse::<ResumeToken>().unwrap_err();
        assert!(err.is_validation(), "{text}: {err}");
    }
}

/// A rolled-back transaction leaves no trace in the feed.
pub async fn feed_omits_rolled_back_writes(h: &impl Harness) {
    let store = h.store().await;
    if lacks_change_feed(&*store).await || lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    let result: opstore_domain::Result<()> =
        run_transaction(&*store, TxOptions::default(), |tx| async move {
            tx.repository::<Item>()?
                .insert(&item("ghost").build())
                .await?;
            Err(opstore_domain::StoreError::Conflict(
                "abort on purpose".into(),
            ))
        })
        .await;
    assert!(result.is_err());
    repo.insert(&item("real").build()).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key, "real");
}

/// A collection kept out of the change feed, as job queues are.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct QueueEntry {
    id: String,
    state: String,
}

static QUEUE_ENTRY: std::sync::LazyLock<opstore_domain::Schema> = std::sync::LazyLock::new(|| {
    opstore_domain::Schema::builder("queue_entries", "id")
        .field(opstore_domain::Field::new("state", opstore_domain::FieldType::String).indexed())
        .without_change_feed()
        .build()
});

impl Entity for QueueEntry {
    fn schema() -> &'static opstore_domain::Schema {
        &QUEUE_ENTRY
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A collection declared without a change feed takes every write, and watching
/// it is a `Validation` error, whether or not the backend has a change feed.
pub async fn feed_collection_without_feed_cannot_be_watched(h: &impl Harness) {
    let store = h.store().await;
    store.migrate(&[QueueEntry::schema()]).await.unwrap();
    let repo = store.repository::<QueueEntry>().unwrap();
    let entry = |id: &str| QueueEntry {
        id: id.into(),
        state: "pending".into(),
    };
    repo.insert(&entry("a")).await.unwrap();
    repo.insert_many(&[entry("b"), entry("c")]).await.unwrap();
    let claimed = repo
        .update_many(
            &Filter::eq("state", "pending"),
            &Update::new().set("state", "done"),
        )
        .await
        .unwrap();
    assert_eq!(claimed.modified, 3);
    assert!(repo.delete("a").await.unwrap());
    assert_eq!(repo.count(&Filter::eq("state", "done")).await.unwrap(), 2);
    let watch = store
        .change_feed()
        .watch(WatchRequest {
            schema: QueueEntry::schema(),
            start: StartAt::Beginning,
            filter: None,
        })
        .await;
    let err = watch.map(drop).unwrap_err();
    assert!(err.is_validation(), "{err:?}");
}

//! Test entities covering every portable type, and builders for them.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures::StreamExt;
use opstore_domain::{
    ChangeEvent, ChangeStream, Entity, Field, FieldType, Filter, Repository, Result, ScalarType,
    Schema, SortDir, StartAt, Store, StoreError, Timestamp, TxOptions, Update, Value, WatchRequest,
    json, run_transaction,
};
use serde::{Deserialize, Serialize};

/// Nested status object of an [`Item`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemStatus {
    /// Indexed nested string.
    pub state: String,
    /// Optional nested timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

/// The main fixture: every portable type, nested and optional fields, indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Key.
    pub id: String,
    /// Indexed string.
    pub name: String,
    /// Unique optional string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Integer.
    pub count: i64,
    /// Float.
    pub price: f64,
    /// Bool.
    pub active: bool,
    /// List of strings.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Nested object with an indexed field.
    pub status: ItemStatus,
    /// Free-form JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Optional text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Timestamp, indexed.
    pub created_at: Timestamp,
    /// Optional float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Map of string labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set of strings (backends without sets may store it sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

static ITEM: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("items", "id")
        .field(Field::new("name", FieldType::String).indexed())
        .field(Field::new("sku", FieldType::String).unique().optional())
        .field(Field::new("count", FieldType::Int))
        .field(Field::new("price", FieldType::Float))
        .field(Field::new("active", FieldType::Bool))
        .field(Field::new("tags", FieldType::List(ScalarType::String)))
        .field(Field::new("status", FieldType::Object))
        .field(Field::new("status.state", FieldType::String).indexed())
        .field(Field::new("status.since", FieldType::Timestamp).optional())
        .field(Field::new("meta", FieldType::Json).optional())
        .field(Field::new("note", FieldType::String).optional())
        .field(Field::new("created_at", FieldType::Timestamp).indexed())
        .field(Field::new("weight", FieldType::Float).optional())
        .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
        .field(Field::new("roles", FieldType::Set(ScalarType::String)).optional())
        .build()
});

impl Entity for Item {
    fn schema() -> &'static Schema {
        &ITEM
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A second entity with a TTL and a default sort, for expiry and ordering cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Key.
    pub id: String,
    /// Indexed owner.
    pub owner: String,
    /// Priority, default sort descending.
    pub priority: i64,
    /// TTL counts from here.
    pub touched_at: Timestamp,
}

static TICKET: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("tickets", "id")
        .field(Field::new("owner", FieldType::String).indexed())
        .field(Field::new("priority", FieldType::Int).indexed())
        .field(Field::new("touched_at", FieldType::Timestamp).indexed())
        .ttl("touched_at", std::time::Duration::from_secs(3600))
        .default_sort("priority", SortDir::Desc)
        .build()
});

impl Entity for Ticket {
    fn schema() -> &'static Schema {
        &TICKET
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// Every fixture schema; harnesses migrate these.
pub fn schemas() -> Vec<&'static Schema> {
    vec![Item::schema(), Ticket::schema()]
}

/// A fixed instant tests build timestamps from.
pub fn t0() -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000)
}

/// Builder for [`Item`].
#[derive(Debug, Clone)]
pub struct ItemBuilder(Item);

impl ItemBuilder {
    /// An item with defaults derived from its id.
    pub fn new(id: &str) -> Self {
        ItemBuilder(Item {
            id: id.to_owned(),
            name: format!("name-{id}"),
            sku: None,
            count: 0,
            price: 1.0,
            active: true,
            tags: Vec::new(),
            status: ItemStatus {
                state: "new".to_owned(),
                since: None,
            },
            meta: None,
            note: None,
            created_at: t0(),
            weight: None,
            labels: BTreeMap::new(),
            roles: Vec::new(),
        })
    }
    /// Sets `name`.
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.to_owned();
        self
    }
    /// Sets `sku`.
    pub fn sku(mut self, sku: &str) -> Self {
        self.0.sku = Some(sku.to_owned());
        self
    }
    /// Sets `count`.
    pub fn count(mut self, count: i64) -> Self {
        self.0.count = count;
        self
    }
    /// Sets `price`.
    pub fn price(mut self, price: f64) -> Self {
        self.0.price = price;
        self
    }
    /// Sets `active`.
    pub fn active(mut self, active: bool) -> Self {
        self.0.active = active;
        self
    }
    /// Sets `tags`.
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.0.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }
    /// Sets `status.state`.
    pub fn state(mut self, state: &str) -> Self {
        self.0.status.state = state.to_owned();
        self
    }
    /// Sets `meta`.
    pub fn meta(mut self, meta: Value) -> Self {
        self.0.meta = Some(meta);
        self
    }
    /// Sets `note`.
    pub fn note(mut self, note: &str) -> Self {
        self.0.note = Some(note.to_owned());
        self
    }
    /// Sets `created_at` to `t0()` plus `secs` seconds.
    pub fn at(mut self, secs: i64) -> Self {
        self.0.created_at = Timestamp::from_micros(t0().as_micros() + secs * 1_000_000);
        self
    }
    /// Sets `weight`.
    pub fn weight(mut self, weight: f64) -> Self {
        self.0.weight = Some(weight);
        self
    }
    /// Adds the label `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.to_owned(), value.to_owned());
        self
    }
    /// Sets `roles`.
    pub fn roles(mut self, roles: &[&str]) -> Self {
        self.0.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }
    /// The item.
    pub fn build(self) -> Item {
        self.0
    }
}

/// Shorthand for `ItemBuilder::new(id)`.
pub fn item(id: &str) -> ItemBuilder {
    ItemBuilder::new(id)
}

/// A [`Ticket`] touched at `touched_at`.
pub fn ticket(id: &str, owner: &str, priority: i64, touched_at: Timestamp) -> Ticket {
    Ticket {
        id: id.to_owned(),
        owner: owner.to_owned(),
        priority,
        touched_at,
    }
}

/// Keys of `items`, in order.
pub fn keys(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.id.clone()).collect()
}

/// Keys of `tickets`, in order.
pub fn ticket_keys(tickets: &[Ticket]) -> Vec<String> {
    tickets.iter().map(|t| t.id.clone()).collect()
}

/// Owned strings from string slices, for comparing key lists.
pub fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// An update that, applied by an upsert that inserts, creates a complete [`Item`]
/// (every required field from `set_on_insert`) with `name` set.
pub fn upsert_item(name: &str) -> Update {
    Update::new()
        .set("name", name)
        .set_on_insert("count", 0)
        .set_on_insert("price", 1.0)
        .set_on_insert("active", true)
        .set_on_insert("tags", json!([]))
        .set_on_insert("status", json!({"state": "new"}))
        .set_on_insert("created_at", t0())
}

/// Bounds waits for something that must happen (a change event, a concurrent
/// reader), so a broken backend fails the case instead of hanging the run. It is
/// never an assertion about speed.
pub const LIVENESS_GUARD: Duration = Duration::from_secs(60);

/// The backend's current time, read from the expiry of a probe lease: the clock
/// that judges leases and TTLs. Cases build timestamps from it instead of the
/// local wall clock, so they hold on backends whose clock tests move.
pub async fn store_now(store: &dyn Store) -> Timestamp {
    let ttl = Duration::from_secs(600);
    let owner = format!("probe-{}", Timestamp::now().as_micros());
    let lease = store
        .locks()
        .try_acquire("testkit.clock-probe", &owner, ttl)
        .await
        .expect("acquire the clock probe lease")
        .expect("the clock probe lease is free");
    store
        .locks()
        .release(&lease)
        .await
        .expect("release the clock probe lease");
    lease.expires_at().sub(ttl)
}

/// Starts watching `items` from `start`, optionally filtered.
pub async fn watch_items(
    store: &dyn Store,
    start: StartAt,
    filter: Option<Filter>,
) -> Result<ChangeStream> {
    store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start,
            filter,
        })
        .await
}

/// The next event of `stream`; panics if the stream ends, fails, or stays silent
/// past [`LIVENESS_GUARD`].
pub async fn next_event(stream: &mut ChangeStream) -> ChangeEvent {
    match tokio::time::timeout(LIVENESS_GUARD, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("change stream failed: {e}"),
        Ok(None) => panic!("change stream ended"),
        Err(_) => panic!("no change event arrived within {LIVENESS_GUARD:?}"),
    }
}

/// The next `n` events of `stream`.
pub async fn next_events(stream: &mut ChangeStream, n: usize) -> Vec<ChangeEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(stream).await);
    }
    events
}

/// Events of `stream` up to and including the first one for `sentinel_key`.
///
/// Writing a sentinel document last and reading up to it shows everything a
/// stream delivers before it, with a signal instead of a wait for silence.
pub async fn events_until(stream: &mut ChangeStream, sentinel_key: &str) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    loop {
        let event = next_event(stream).await;
        let done = event.key == sentinel_key;
        events.push(event);
        if done {
            return events;
        }
    }
}

/// Keys of `events`, in order.
pub fn event_keys(events: &[ChangeEvent]) -> Vec<String> {
    events.iter().map(|e| e.key.clone()).collect()
}

/// The first item of a watch: `Err` when `watch` itself failed or the stream's
/// first item is an error (the two ways the feed contract allows to report one).
pub async fn first_watch_result(watch: Result<ChangeStream>) -> Result<ChangeEvent> {
    let mut stream = watch?;
    match tokio::time::timeout(LIVENESS_GUARD, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("change stream ended"),
        Err(_) => panic!("no change event or error arrived within {LIVENESS_GUARD:?}"),
    }
}

/// Asserts that `result` is `Unsupported` and names `capability` in a way a reader
/// can act on.
pub fn assert_unsupported<T: std::fmt::Debug>(result: Result<T>, capability: &str) {
    match result {
        Err(StoreError::Unsupported(msg)) => assert!(
            !msg.is_empty(),
            "empty Unsupported message for {capability}"
        ),
        other => panic!("backend declares no {capability}, expected Unsupported, got {other:?}"),
    }
}

/// True (after asserting that a transaction is `Unsupported`) when the backend
/// declares no transactions; cases that need them return early then.
pub async fn lacks_transactions(store: &dyn Store) -> bool {
    if store.capabilities().transactions {
        return false;
    }
    let result = run_transaction(store, TxOptions::default(), |_tx| async { Ok(()) }).await;
    assert_unsupported(result, "transactions");
    true
}

/// True (after asserting that `get_for_update` in a transaction is `Unsupported`)
/// when the backend declares no row locks; cases that need them return early then.
pub async fn lacks_row_locks(store: &dyn Store) -> bool {
    if store.capabilities().row_locks {
        return false;
    }
    let result = run_transaction(store, TxOptions::default(), |tx| async move {
        opstore_domain::TxExt::repository::<Item>(&tx)?
            .get_for_update("probe")
            .await
    })
    .await;
    assert_unsupported(result, "row locks");
    true
}

/// True (after asserting that watching is `Unsupported`) when the backend declares
/// no change feed.
pub async fn lacks_change_feed(store: &dyn Store) -> bool {
    if store.capabilities().change_feed {
        return false;
    }
    assert_unsupported(
        watch_items(store, StartAt::Now, None).await.map(drop),
        "change feed",
    );
    true
}

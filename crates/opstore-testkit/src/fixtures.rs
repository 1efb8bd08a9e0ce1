//! Test entities covering every portable type, and builders for them.

use std::sync::LazyLock;

use opstore_domain::{Entity, Field, FieldType, ScalarType, Schema, SortDir, Timestamp, Value};
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
            status: ItemStatus { state: "new".to_owned(), since: None },
            meta: None,
            note: None,
            created_at: t0(),
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
    /// The item.
    pub fn build(self) -> Item {
        self.0
    }
}

/// Shorthand for `ItemBuilder::new(id)`.
pub fn item(id: &str) -> ItemBuilder {
    ItemBuilder::new(id)
}

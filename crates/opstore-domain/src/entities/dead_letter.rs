//! Events a processor gave up on.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{Entity, Field, FieldType, Schema};
use crate::time::Timestamp;

/// An event that exhausted its retries, kept so nothing is dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique id.
    pub id: String,
    /// Processor that gave up.
    pub processor: String,
    /// Source collection.
    pub collection: String,
    /// Key of the source document.
    pub key: String,
    /// The change event, as delivered.
    pub event: Value,
    /// Last error message.
    pub error: String,
    /// Attempts made.
    pub attempts: i64,
    /// When it was dead-lettered.
    pub created_at: Timestamp,
    /// Set when an operator replayed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<Timestamp>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("dead_letters", "id")
        .field(Field::new("processor", FieldType::String).indexed())
        .field(Field::new("collection", FieldType::String))
        .field(Field::new("key", FieldType::String))
        .field(Field::new("event", FieldType::Json))
        .field(Field::new("error", FieldType::String))
        .field(Field::new("attempts", FieldType::Int))
        .field(Field::new("created_at", FieldType::Timestamp).indexed())
        .field(Field::new("replayed_at", FieldType::Timestamp).optional())
        .default_sort("created_at", crate::query::SortDir::Asc)
        .build()
});

impl DeadLetter {
    /// The schema as a `'static` reference.
    pub fn schema_ref() -> &'static Schema {
        &SCHEMA
    }
}

impl Entity for DeadLetter {
    fn schema() -> &'static Schema {
        &SCHEMA
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

//! The portable query model: filters, updates, sorts, pages and aggregates.
//!
//! Builders take field paths as strings; nothing is trusted until the model is
//! checked against a [`Schema`](crate::Schema) ([`Checked`](crate::Checked)), which adapters require
//! before they translate anything.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A predicate over documents.
///
/// Portable semantics (every adapter follows them; the memory adapter is the
/// reference): an absent field and a null field are the same; `eq(path, null)`
/// matches both, `ne` and `nin` match them, range comparisons never do. Numbers
/// compare by value (`1 == 1.0`); strings compare by Unicode code point.
///
/// Filters are built from field paths and values, combined with `and`, `or` and
/// `not`, and evaluated here with the reference evaluator every adapter agrees with:
///
/// ```
/// use opstore_domain::{Filter, eval, json};
///
/// let doc = json!({"id": "n1", "rack": 4, "state": "Cordoned", "healthevent": {"nodename": "gpu-07"}});
/// let cordoned_on_low_racks = Filter::eq("state", "Cordoned").and(Filter::lt("rack", 10));
/// assert!(eval::matches(&cordoned_on_low_racks, &doc));
///
/// // Dotted paths reach nested fields; `contains_ci` takes its needle literally.
/// assert!(eval::matches(&Filter::contains_ci("healthevent.nodename", "GPU-"), &doc));
/// // An absent field equals null: `ne` and `missing` match it, ranges never do.
/// assert!(eval::matches(&Filter::ne("drained_at", "2026-01-01"), &doc));
/// assert!(eval::matches(&Filter::missing("drained_at"), &doc));
/// assert!(!eval::matches(&Filter::gt("drained_at", 0), &doc));
/// // Numbers compare by value, whatever their JSON representation.
/// assert!(eval::matches(&Filter::is_in("rack", [4.0, 8.0]), &doc));
/// assert!(!eval::matches(&Filter::eq("state", "Cordoned").not(), &doc));
/// ```
///
/// Paths are checked against the entity's schema before a backend sees them, so an
/// unknown path is a [`StoreError::Validation`](crate::StoreError::Validation) and
/// never part of a query string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Matches every document.
    All,
    /// Field equals value.
    Eq(String, Value),
    /// Field differs from value (absent fields match).
    Ne(String, Value),
    /// Field greater than value.
    Gt(String, Value),
    /// Field greater than or equal to value.
    Gte(String, Value),
    /// Field less than value.
    Lt(String, Value),
    /// Field less than or equal to value.
    Lte(String, Value),
    /// Field equals one of the values.
    In(String, Vec<Value>),
    /// Field equals none of the values (absent fields match).
    Nin(String, Vec<Value>),
    /// Field present and not null (`true`), or absent or null (`false`).
    Exists(String, bool),
    /// String field contains the needle, ignoring case; the needle is literal text.
    ContainsCi(String, String),
    /// All sub-filters match (an empty list matches everything).
    And(Vec<Filter>),
    /// Any sub-filter matches (an empty list matches nothing).
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// Matches every document.
    pub fn all() -> Self {
        Filter::All
    }
    /// `path == value`.
    pub fn eq(path: &str, value: impl Into<Value>) -> Self {
        Filter::Eq(path.to_owned(), value.into())
    }
    /// `path != value`.
    pub fn ne(path: &str, value: impl Into<Value>) -> Self {
        Filter::Ne(path.to_owned(), value.into())
    }
    /// `path > value`.
    pub fn gt(path: &str, value: impl Into<Value>) -> Self {
        Filter::Gt(path.to_owned(), value.into())
    }
    /// `path >= value`.
    pub fn gte(path: &str, value: impl Into<Value>) -> Self {
        Filter::Gte(path.to_owned(), value.into())
    }
    /// `path < value`.
    pub fn lt(path: &str, value: impl Into<Value>) -> Self {
        Filter::Lt(path.to_owned(), value.into())
    }
    /// `path <= value`.
    pub fn lte(path: &str, value: impl Into<Value>) -> Self {
        Filter::Lte(path.to_owned(), value.into())
    }
    /// `path` is one of `values`.
    pub fn is_in<V: Into<Value>>(path: &str, values: impl IntoIterator<Item = V>) -> Self {
        Filter::In(
            path.to_owned(),
            values.into_iter().map(Into::into).collect(),
        )
    }
    /// `path` is none of `values`.
    pub fn not_in<V: Into<Value>>(path: &str, values: impl IntoIterator<Item = V>) -> Self {
        Filter::Nin(
            path.to_owned(),
            values.into_iter().map(Into::into).collect(),
        )
    }
    /// `path` is present and not null.
    pub fn exists(path: &str) -> Self {
        Filter::Exists(path.to_owned(), true)
    }
    /// `path` is absent or null.
    pub fn missing(path: &str) -> Self {
        Filter::Exists(path.to_owned(), false)
    }
    /// String at `path` contains `needle`, ignoring case, taken literally.
    pub fn contains_ci(path: &str, needle: &str) -> Self {
        Filter::ContainsCi(path.to_owned(), needle.to_owned())
    }
    /// Both this and `other`.
    pub fn and(self, other: Filter) -> Self {
        match (self, other) {
            (Filter::All, f) | (f, Filter::All) => f,
            (Filter::And(mut a), Filter::And(b)) => {
                a.extend(b);
                Filter::And(a)
            }
            (Filter::And(mut a), f) => {
                a.push(f);
                Filter::And(a)
            }
            (a, b) => Filter::And(vec![a, b]),
        }
    }
    /// This or `other`.
    pub fn or(self, other: Filter) -> Self {
        match (self, other) {
            (Filter::Or(mut a), f) => {
                a.push(f);
                Filter::Or(a)
            }
            (a, b) => Filter::Or(vec![a, b]),
        }
    }
    /// All of `filters`.
    pub fn all_of(filters: impl IntoIterator<Item = Filter>) -> Self {
        Filter::And(filters.into_iter().collect())
    }
    /// Any of `filters`.
    pub fn any_of(filters: impl IntoIterator<Item = Filter>) -> Self {
        Filter::Or(filters.into_iter().collect())
    }
    /// Negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Equality terms that every match must satisfy (used to pick an index).
    pub fn required_equalities(&self) -> Vec<(&str, &Value)> {
        match self {
            Filter::Eq(p, v) if !v.is_null() => vec![(p.as_str(), v)],
            Filter::And(fs) => fs.iter().flat_map(Filter::required_equalities).collect(),
            _ => Vec::new(),
        }
    }
}

/// One update operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOp {
    /// Sets the field (creating parents).
    Set(String, Value),
    /// Removes the field.
    Unset(String),
    /// Adds a number (an absent field counts as 0).
    Inc(String, Value),
    /// Appends to a list (an absent field becomes a one-element list); a set
    /// ignores a value it already holds.
    Push(String, Value),
    /// Sets the field only when an upsert inserts.
    SetOnInsert(String, Value),
}

impl UpdateOp {
    /// The field path the operator writes.
    pub fn path(&self) -> &str {
        match self {
            UpdateOp::Set(p, _)
            | UpdateOp::Unset(p)
            | UpdateOp::Inc(p, _)
            | UpdateOp::Push(p, _)
            | UpdateOp::SetOnInsert(p, _) => p,
        }
    }
}

/// A list of update operators applied in order.
///
/// ```
/// use opstore_domain::{Update, eval, json};
///
/// let mut doc = json!({"id": "n1", "state": "Healthy", "attempts": 1, "note": "old"});
/// let update = Update::new()
///     .set("state", "Quarantined")
///     .inc("attempts", 1)
///     .push("history", "quarantined by health monitor")
///     .unset("note")
///     .set_on_insert("created_by", "monitor"); // only when an upsert inserts
/// let changed = eval::apply_update(&mut doc, &update, false);
/// assert!(changed);
/// assert_eq!(
///     doc,
///     json!({"id": "n1", "state": "Quarantined", "attempts": 2,
///            "history": ["quarantined by health monitor"]})
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The operators.
    pub ops: Vec<UpdateOp>,
}

impl Update {
    /// An empty update.
    pub fn new() -> Self {
        Update::default()
    }
    /// Sets `path` to `value`.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.ops.push(UpdateOp::Set(path.to_owned(), value.into()));
        self
    }
    /// Removes `path`.
    pub fn unset(mut self, path: &str) -> Self {
        self.ops.push(UpdateOp::Unset(path.to_owned()));
        self
    }
    /// Adds `by` to the number at `path`.
    pub fn inc(mut self, path: &str, by: impl Into<Value>) -> Self {
        self.ops.push(UpdateOp::Inc(path.to_owned(), by.into()));
        self
    }
    /// Appends `value` to the list at `path`.
    pub fn push(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.ops.push(UpdateOp::Push(path.to_owned(), value.into()));
        self
    }
    /// Sets `path` only when an upsert inserts.
    pub fn set_on_insert(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.ops
            .push(UpdateOp::SetOnInsert(path.to_owned(), value.into()));
        self
    }
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortDir {
    /// Smallest first; absent and null values come first.
    Asc,
    /// Largest first; absent and null values come last.
    Desc,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// Field path.
    pub path: String,
    /// Direction.
    pub dir: SortDir,
}

/// A find request: filter, sort, skip and limit.
///
/// Results are ordered by the sort keys, then by the schema's default sort, then
/// by the document key ascending, so ties are stable on every backend.
///
/// Offset pages come with the total number of matches; for deep pagination, a
/// keyset cursor (a range filter on the last sort value seen) avoids skipping:
///
/// ```
/// # use std::sync::LazyLock;
/// # use opstore_domain::{Entity, Field, FieldType, Schema};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # struct Node { id: String, rack: i64, state: String }
/// # static NODE: LazyLock<Schema> = LazyLock::new(|| {
/// #     Schema::builder("nodes", "id")
/// #         .field(Field::new("rack", FieldType::Int).indexed())
/// #         .field(Field::new("state", FieldType::String).indexed())
/// #         .build()
/// # });
/// # impl Entity for Node {
/// #     fn schema() -> &'static Schema { &NODE }
/// #     fn key(&self) -> String { self.id.clone() }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> opstore_domain::Result<()> {
/// use opstore_domain::{Filter, Query, Repository, StoreExt};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let nodes = store.repository::<Node>()?;
/// let all: Vec<Node> = (1..=5)
///     .map(|i| Node { id: format!("n{i}"), rack: i, state: "Healthy".into() })
///     .collect();
/// nodes.insert_many(&all).await?;
///
/// // Offset paging: the second page of two, largest rack first, with the total.
/// let healthy = Query::filter(Filter::eq("state", "Healthy")).sort_desc("rack");
/// let page = nodes.find_page(&healthy.clone().skip(2).limit(2)).await?;
/// assert_eq!(page.total, 5);
/// assert_eq!(page.items.iter().map(|n| n.rack).collect::<Vec<_>>(), [3, 2]);
///
/// // Keyset paging: continue after the last rack seen.
/// let first = nodes.find(&Query::new().sort_asc("rack").limit(2)).await?;
/// let cursor = first.last().map(|n| n.rack).unwrap_or_default();
/// let next = nodes
///     .find(&Query::filter(Filter::gt("rack", cursor)).sort_asc("rack").limit(2))
///     .await?;
/// assert_eq!(next.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["n3", "n4"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Which documents.
    pub filter: Filter,
    /// Order.
    pub sort: Vec<SortKey>,
    /// Documents to skip after sorting.
    pub skip: u64,
    /// At most this many documents; 0 means all.
    pub limit: u64,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filter: Filter::All,
            sort: Vec::new(),
            skip: 0,
            limit: 0,
        }
    }
}

impl Query {
    /// All documents.
    pub fn new() -> Self {
        Query::default()
    }
    /// Documents matching `filter`.
    pub fn filter(filter: Filter) -> Self {
        Query {
            filter,
            ..Query::default()
        }
    }
    /// Adds an ascending sort key.
    pub fn sort_asc(mut self, path: &str) -> Self {
        self.sort.push(SortKey {
            path: path.to_owned(),
            dir: SortDir::Asc,
        });
        self
    }
    /// Adds a descending sort key.
    pub fn sort_desc(mut self, path: &str) -> Self {
        self.sort.push(SortKey {
            path: path.to_owned(),
            dir: SortDir::Desc,
        });
        self
    }
    /// Skips `n` documents.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }
    /// Returns at most `n` documents (0 = all).
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = n;
        self
    }
}

/// A page of results with the total number of matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The documents on this page.
    pub items: Vec<T>,
    /// Matches before skip and limit.
    pub total: u64,
}

/// Counts from a multi-document update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCount {
    /// Documents the filter matched.
    pub matched: u64,
    /// Documents whose stored value changed.
    pub modified: u64,
}

/// A single-field aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Smallest value (null when nothing matches).
    Min,
    /// Largest value (null when nothing matches).
    Max,
    /// Sum of numbers (0 when nothing matches; an int field sums to an int).
    Sum,
}

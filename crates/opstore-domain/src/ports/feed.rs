//! Change feeds with resume tokens.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::query::Filter;
use crate::schema::Schema;
use crate::time::Timestamp;

/// An opaque position in a change feed. Serializable; pass it back in
/// [`StartAt::After`] to resume right after the event that carried it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResumeToken(Vec<u8>);

impl ResumeToken {
    /// Wraps adapter-specific bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        ResumeToken(bytes)
    }
    /// The adapter-specific bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ResumeToken {
    /// Lower-case hex, the form the CLI prints and accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResumeToken({self})")
    }
}

impl FromStr for ResumeToken {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || StoreError::Validation(format!("resume token {s:?} is not hex"));
        if s.len() % 2 != 0 || s.len() > 8192 {
            return Err(bad());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<u8>>>()
            .map(ResumeToken)
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only changes committed after the watch starts.
    Now,
    /// The oldest retained change.
    Beginning,
    /// Right after the change that carried this token.
    After(ResumeToken),
}

/// Kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// A new document.
    Insert,
    /// A document changed by an update operator.
    Update,
    /// A document replaced whole.
    Replace,
    /// A document removed.
    Delete,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Collection name.
    pub collection: String,
    /// Kind of change.
    pub op: ChangeOp,
    /// Key of the changed document.
    pub key: String,
    /// The document after the change (`None` for deletes).
    pub document: Option<Value>,
    /// Resume right after this event.
    pub token: ResumeToken,
    /// Commit time as the backend recorded it.
    pub at: Timestamp,
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The collection.
    pub schema: &'static Schema,
    /// Starting point.
    pub start: StartAt,
    /// Only events whose document matches (deletes carry no document and are
    /// delivered only to unfiltered watches).
    pub filter: Option<Filter>,
}

impl WatchRequest {
    /// `Validation` error when the collection is declared without a change feed
    /// ([`SchemaBuilder::without_change_feed`](crate::SchemaBuilder::without_change_feed));
    /// every adapter's `watch` calls it first.
    pub fn check_watchable(&self) -> Result<()> {
        if self.schema.has_change_feed() {
            return Ok(());
        }
        Err(StoreError::Validation(format!(
            "collection `{}` is declared without a change feed and cannot be watched",
            self.schema.name()
        )))
    }
}

/// Stream of change events. Ends only with an error or when dropped.
pub type ChangeStream = BoxStream<'static, Result<ChangeEvent>>;

/// A per-collection change feed.
///
/// Contract: delivery is at-least-once and in commit order per collection; no
/// committed change is skipped; a stream resumed with a token delivers nothing at
/// or before it; a token older than the retained history gives
/// `ResumeTokenExpired` (from `watch` or as the stream's first item). Watching a
/// collection declared without a change feed is a `Validation` error.
///
/// Watch from the beginning, remember the token of the last event handled, and
/// resume after it (a processor saves that token in a [`CheckpointStore`]):
///
/// ```
/// # use std::sync::LazyLock;
/// # use opstore_domain::{Entity, Field, FieldType, Schema};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
/// # fn node(id: &str, rack: i64, state: &str) -> Node {
/// #     Node { id: id.into(), rack, state: state.into() }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> opstore_domain::Result<()> {
/// use futures::StreamExt;
/// use opstore_domain::{ChangeOp, ResumeToken, StartAt, Store, StoreExt, Repository, Update, WatchRequest};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let nodes = store.repository::<Node>()?;
/// nodes.insert(&node("n1", 4, "Healthy")).await?;
/// nodes.update_one("n1", &Update::new().set("state", "Cordoned")).await?;
///
/// let feed = store.change_feed();
/// let request = |start| WatchRequest { schema: Node::schema(), start, filter: None };
/// let mut stream = feed.watch(request(StartAt::Beginning)).await?;
/// let first = stream.next().await.expect("the insert")?;
/// assert_eq!((first.op, first.key.as_str()), (ChangeOp::Insert, "n1"));
/// drop(stream);
///
/// // Tokens are opaque bytes with a hex text form, so they can be stored anywhere.
/// let saved = first.token.to_string();
/// let token: ResumeToken = saved.parse()?;
/// let mut resumed = feed.watch(request(StartAt::After(token))).await?;
/// let next = resumed.next().await.expect("the update")?;
/// assert_eq!(next.op, ChangeOp::Update);
/// assert_eq!(next.document.as_ref().and_then(|d| d["state"].as_str()), Some("Cordoned"));
/// # Ok(()) }
/// ```
///
/// [`CheckpointStore`]: crate::CheckpointStore
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Starts watching.
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream>;
}

//! Document collections: the dyn-capable port every adapter implements, and the
//! typed [`Repository`] that services use.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::query::{Agg, Filter, Page, Query, Update, UpdateCount};
use crate::schema::{Entity, Schema};

/// Result of an upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted<D> {
    /// True when the document was created, false when an existing one was updated.
    pub inserted: bool,
    /// The document after the write.
    pub document: D,
}

/// A document as a read returns it: a tree, or the JSON text the backend sent.
///
/// Typed reads decode text straight into the entity, without building the tree
/// first; adapters whose driver hands them JSON text return it undecoded.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredDoc {
    /// A document tree.
    Tree(Value),
    /// A document's JSON text, as stored.
    Json(String),
}

impl StoredDoc {
    /// The document tree, parsing text; a `Backend` error when the text is not JSON.
    pub fn into_tree(self) -> Result<Value> {
        match self {
            StoredDoc::Tree(v) => Ok(v),
            StoredDoc::Json(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::backend("a stored document is not JSON", e)),
        }
    }
}

/// One collection of JSON documents, validated against its schema.
///
/// This is the port adapters implement: object safe, so a store chosen at run time
/// can hand it out as `Arc<dyn Collection>`. Services use the typed [`Repository`].
///
/// Error contract, shared by every method: a field path or value the schema rejects
/// is `Validation` (and nothing is written); a duplicate key or unique field is
/// `Conflict` (and nothing is written, including by `insert_many`); an update or
/// replace of a missing key is `NotFound`; lost connections are `Connection`;
/// deadlines are `Timeout`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Collection: Send + Sync {
    /// The schema of the documents.
    fn schema(&self) -> &'static Schema;
    /// Inserts one document.
    async fn insert(&self, doc: Value) -> Result<()>;
    /// Inserts all documents or none, in one round trip where the backend allows.
    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64>;
    /// The document with this key, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Value>>;
    /// Like `get`, but the document may be shared with the store rather than
    /// copied; in-process stores override it to avoid a deep copy.
    async fn get_shared(&self, key: &str) -> Result<Option<Arc<Value>>> {
        Ok(self.get(key).await?.map(Arc::new))
    }
    /// Like `get`, but inside a transaction the row stays locked until it ends.
    async fn get_for_update(&self, key: &str) -> Result<Option<Value>>;
    /// Matching documents in order.
    async fn find(&self, query: &Query) -> Result<Vec<Value>>;
    /// Like `find`, as the backend returned them; typed reads use it.
    async fn find_stored(&self, query: &Query) -> Result<Vec<StoredDoc>> {
        Ok(trees(self.find(query).await?))
    }
    /// A page of matching documents with the total count.
    async fn find_page(&self, query: &Query) -> Result<Page<Value>>;
    /// Number of matching documents.
    async fn count(&self, filter: &Filter) -> Result<u64>;
    /// Updates the document with this key and returns it; `NotFound` when missing.
    async fn update_one(&self, key: &str, update: &Update) -> Result<Value>;
    /// Updates every matching document.
    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount>;
    /// Updates the document with this key, or creates it from the key, `set` and
    /// `set_on_insert` values. The created document must satisfy the schema.
    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>>;
    /// Replaces a whole document; `NotFound` when missing.
    async fn replace(&self, doc: Value) -> Result<()>;
    /// Deletes by key; returns whether a document existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Deletes every matching document and returns how many.
    async fn delete_many(&self, filter: &Filter) -> Result<u64>;
    /// Number of matching documents per distinct value of `path` (absent as null),
    /// ordered by value.
    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>>;
    /// Min, max or sum of `path` over matching documents.
    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value>;
    /// Atomically takes up to `query.limit` matching documents (in query order) that
    /// no concurrent claimer takes, applies `update` to them and returns them after
    /// the update. A work-queue primitive.
    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>>;
    /// Like `claim`, as the backend returned them; typed claims use it.
    async fn claim_stored(&self, query: &Query, update: &Update) -> Result<Vec<StoredDoc>> {
        Ok(trees(self.claim(query, update).await?))
    }
}

fn trees(docs: Vec<Value>) -> Vec<StoredDoc> {
    docs.into_iter().map(StoredDoc::Tree).collect()
}

/// Typed access to one entity's collection.
///
/// Same contract as [`Collection`]; documents are the entity type. Services hold an
/// `Arc<dyn Repository<T>>` so tests can substitute `MockRepository` (feature
/// `mocks`).
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
/// use opstore_domain::{Agg, Filter, Repository, StoreExt, Update, json};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let nodes = store.repository::<Node>()?;
/// nodes.insert(&node("n1", 4, "Healthy")).await?;
/// nodes.insert_many(&[node("n2", 4, "Healthy"), node("n3", 7, "Cordoned")]).await?;
///
/// // Missing is `Ok(None)` on reads and `NotFound` on updates; a duplicate key is `Conflict`.
/// assert_eq!(nodes.get("n1").await?, Some(node("n1", 4, "Healthy")));
/// assert_eq!(nodes.get("nope").await?, None);
/// let set_cordoned = Update::new().set("state", "Cordoned");
/// assert!(nodes.update_one("nope", &set_cordoned).await.unwrap_err().is_not_found());
/// assert!(nodes.insert(&node("n1", 1, "Healthy")).await.unwrap_err().is_conflict());
///
/// let updated = nodes.update_one("n1", &set_cordoned).await?;
/// assert_eq!(updated.state, "Cordoned");
/// let on_rack_4 = Filter::eq("rack", 4);
/// let counts = nodes.update_many(&on_rack_4, &set_cordoned).await?;
/// assert_eq!((counts.matched, counts.modified), (2, 1));
/// assert_eq!(nodes.count(&Filter::eq("state", "Cordoned")).await?, 3);
/// assert_eq!(nodes.get_by_field("rack", json!(7)).await?.map(|n| n.id), Some("n3".into()));
/// assert_eq!(nodes.aggregate(&Filter::all(), "rack", Agg::Max).await?, json!(7));
/// assert_eq!(nodes.delete_many(&on_rack_4).await?, 2);
/// assert!(!nodes.exists(&on_rack_4).await?);
/// # Ok(()) }
/// ```
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Repository<T: Entity>: Send + Sync {
    /// Inserts one entity.
    async fn insert(&self, doc: &T) -> Result<()>;
    /// Inserts all or none; an empty slice does no I/O.
    async fn insert_many(&self, docs: &[T]) -> Result<u64>;
    /// By key.
    async fn get(&self, key: &str) -> Result<Option<T>>;
    /// By key, locking the row inside a transaction.
    async fn get_for_update(&self, key: &str) -> Result<Option<T>>;
    /// First entity (in default order) whose `path` equals `value`.
    async fn get_by_field(&self, path: &str, value: Value) -> Result<Option<T>>;
    /// First matching entity in default order.
    async fn find_one(&self, filter: &Filter) -> Result<Option<T>>;
    /// Matching entities.
    async fn find(&self, query: &Query) -> Result<Vec<T>>;
    /// A page with the total.
    async fn find_page(&self, query: &Query) -> Result<Page<T>>;
    /// Count of matches.
    async fn count(&self, filter: &Filter) -> Result<u64>;
    /// Whether anything matches.
    async fn exists(&self, filter: &Filter) -> Result<bool>;
    /// Updates by key and returns the result; `NotFound` when missing.
    async fn update_one(&self, key: &str, update: &Update) -> Result<T>;
    /// Updates every match.
    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount>;
    /// Update or create by key.
    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<T>>;
    /// Replaces a whole entity; `NotFound` when missing.
    async fn replace(&self, doc: &T) -> Result<()>;
    /// Deletes by key.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Deletes matches.
    async fn delete_many(&self, filter: &Filter) -> Result<u64>;
    /// Counts per distinct value.
    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>>;
    /// Min / max / sum.
    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value>;
    /// Work-queue claim, see [`Collection::claim`].
    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<T>>;
}

/// The [`Repository`] over any [`Collection`]: serde converts between the entity
/// and the document tree in memory (no text round trip).
pub struct CollectionRepository<T> {
    inner: Arc<dyn Collection>,
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for CollectionRepository<T> {
    fn clone(&self) -> Self {
        CollectionRepository {
            inner: Arc::clone(&self.inner),
            _entity: PhantomData,
        }
    }
}

impl<T: Entity> std::fmt::Debug for CollectionRepository<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionRepository")
            .field("collection", &T::schema().name())
            .finish()
    }
}

impl<T: Entity> CollectionRepository<T> {
    /// Wraps a collection whose schema is `T::schema()`.
    pub fn new(inner: Arc<dyn Collection>) -> Self {
        CollectionRepository {
            inner,
            _entity: PhantomData,
        }
    }

    /// The untyped collection.
    pub fn collection(&self) -> &Arc<dyn Collection> {
        &self.inner
    }
}

/// Converts an entity to its document tree.
pub fn to_document<T: Entity>(doc: &T) -> Result<Value> {
    serde_json::to_value(doc).map_err(|e| {
        StoreError::Validation(format!(
            "cannot serialize a `{}` document: {e}",
            T::schema().name()
        ))
    })
}

/// Converts a stored document tree to an entity.
pub fn from_document<T: Entity>(doc: Value) -> Result<T> {
    // By value, so strings move into the entity instead of being copied; the key
    // is kept aside only for the error message.
    let key = doc.get(T::schema().key()).cloned().unwrap_or(Value::Null);
    serde_json::from_value(doc).map_err(|e| {
        let mut stub = serde_json::Map::new();
        stub.insert(T::schema().key().to_owned(), key);
        mismatch::<T>(&Value::Object(stub), &e)
    })
}

/// Converts a stored document to an entity; JSON text is decoded directly.
pub fn from_stored<T: Entity>(doc: StoredDoc) -> Result<T> {
    let text = match doc {
        StoredDoc::Tree(v) => return from_document(v),
        StoredDoc::Json(text) => text,
    };
    serde_json::from_str(&text).map_err(|e| {
        // The error path alone parses the tree, to name the document's key.
        let tree = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
        mismatch::<T>(&tree, &e)
    })
}

fn from_stored_all<T: Entity>(docs: Vec<StoredDoc>) -> Result<Vec<T>> {
    docs.into_iter().map(from_stored).collect()
}

fn mismatch<T: Entity>(doc: &Value, e: &serde_json::Error) -> StoreError {
    let key = doc
        .get(T::schema().key())
        .and_then(Value::as_str)
        .unwrap_or_default();
    StoreError::Backend {
        message: format!(
            "stored document `{key}` in `{}` does not match its type: {e}",
            T::schema().name()
        ),
        source: None,
    }
}

fn from_documents<T: Entity>(docs: Vec<Value>) -> Result<Vec<T>> {
    docs.into_iter().map(from_document).collect()
}

#[async_trait]
impl<T: Entity> Repository<T> for CollectionRepository<T> {
    async fn insert(&self, doc: &T) -> Result<()> {
        self.inner.insert(to_document(doc)?).await
    }
    async fn insert_many(&self, docs: &[T]) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let docs = docs.iter().map(to_document).collect::<Result<Vec<_>>>()?;
        self.inner.insert_many(docs).await
    }
    async fn get(&self, key: &str) -> Result<Option<T>> {
        let Some(doc) = self.inner.get_shared(key).await? else {
            return Ok(None);
        };
        T::deserialize(&*doc)
            .map(Some)
            .map_err(|e| mismatch::<T>(&doc, &e))
    }
    async fn get_for_update(&self, key: &str) -> Result<Option<T>> {
        self.inner
            .get_for_update(key)
            .await?
            .map(from_document)
            .transpose()
    }
    async fn get_by_field(&self, path: &str, value: Value) -> Result<Option<T>> {
        self.find_one(&Filter::Eq(path.to_owned(), value)).await
    }
    async fn find_one(&self, filter: &Filter) -> Result<Option<T>> {
        let docs = self
            .inner
            .find_stored(&Query::filter(filter.clone()).limit(1))
            .await?;
        docs.into_iter().next().map(from_stored).transpose()
    }
    async fn find(&self, query: &Query) -> Result<Vec<T>> {
        from_stored_all(self.inner.find_stored(query).await?)
    }
    async fn find_page(&self, query: &Query) -> Result<Page<T>> {
        let page = self.inner.find_page(query).await?;
        Ok(Page {
            items: from_documents(page.items)?,
            total: page.total,
        })
    }
    async fn count(&self, filter: &Filter) -> Result<u64> {
        self.inner.count(filter).await
    }
    async fn exists(&self, filter: &Filter) -> Result<bool> {
        Ok(!self
            .inner
            .find(&Query::filter(filter.clone()).limit(1))
            .await?
            .is_empty())
    }
    async fn update_one(&self, key: &str, update: &Update) -> Result<T> {
        from_document(self.inner.update_one(key, update).await?)
    }
    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        self.inner.update_many(filter, update).await
    }
    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<T>> {
        let up = self.inner.upsert(key, update).await?;
        Ok(Upserted {
            inserted: up.inserted,
            document: from_document(up.document)?,
        })
    }
    async fn replace(&self, doc: &T) -> Result<()> {
        self.inner.replace(to_document(doc)?).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        self.inner.delete_many(filter).await
    }
    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        self.inner.count_by(filter, path).await
    }
    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        self.inner.aggregate(filter, path, agg).await
    }
    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<T>> {
        from_stored_all(self.inner.claim_stored(query, update).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::schema::{Field, FieldType};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Probe {
        id: String,
        n: i64,
    }

    static PROBE: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("probes", "id")
            .field(Field::new("n", FieldType::Int))
            .build()
    });

    impl Entity for Probe {
        fn schema() -> &'static Schema {
            &PROBE
        }
        fn key(&self) -> String {
            self.id.clone()
        }
    }

    #[test]
    fn text_and_tree_decode_to_the_same_entity() {
        let text = r#"{"id":"p1","n":7}"#.to_owned();
        let tree = serde_json::from_str(&text).unwrap();
        let from_text: Probe = from_stored(StoredDoc::Json(text.clone())).unwrap();
        let from_tree: Probe = from_stored(StoredDoc::Tree(tree)).unwrap();
        assert_eq!(
            from_text,
            Probe {
                id: "p1".into(),
                n: 7
            }
        );
        assert_eq!(from_text, from_tree);
        assert_eq!(
            StoredDoc::Json(text).into_tree().unwrap(),
            serde_json::json!({"id": "p1", "n": 7})
        );
    }

    #[test]
    fn mistyped_text_names_the_document() {
        let err = from_stored::<Probe>(StoredDoc::Json(r#"{"id":"p9","n":"seven"}"#.into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`p9`") && err.contains("probes"), "{err}");
    }

    #[test]
    fn text_that_is_not_json_is_a_backend_error() {
        let err = StoredDoc::Json("{not json".into()).into_tree().unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
        assert!(from_stored::<Probe>(StoredDoc::Json("{not json".into())).is_err());
    }
}

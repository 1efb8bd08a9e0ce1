//! The store: a factory for every port, transactions, health and capabilities.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::ports::collection::{Collection, CollectionRepository};
use crate::ports::coordination::{CheckpointStore, IdempotencyStore, Lease, LockManager};
use crate::ports::feed::ChangeFeed;
use crate::schema::{Entity, Schema};

/// What a backend supports natively. A call that needs a missing capability
/// returns `Unsupported` naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Multi-document atomic transactions.
    pub transactions: bool,
    /// Row-locking reads inside transactions.
    pub row_locks: bool,
    /// A change feed.
    pub change_feed: bool,
    /// Ordering the change feed guarantees ("collection" or "partition").
    pub change_feed_order: &'static str,
    /// Server-side sort on any declared scalar field.
    pub sort_any_field: bool,
    /// Filters on fields without an index.
    pub filter_any_field: bool,
    /// count-by, min, max, sum computed by the server.
    pub aggregates: bool,
    /// Atomic work-queue claim.
    pub claim: bool,
    /// Why a capability is missing, when one is (e.g. "standalone server: transactions need a replica set").
    pub notes: Vec<String>,
}

/// Result of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// Backend name.
    pub backend: &'static str,
    /// Server version or description (no credentials).
    pub server: String,
    /// Round-trip time of the probe.
    pub latency: Duration,
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Steps applied now, one line each.
    pub applied: Vec<String>,
    /// Steps found already applied.
    pub unchanged: Vec<String>,
}

/// Isolation level of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Read committed (row locks give safety where needed).
    ReadCommitted,
    /// Repeatable read / snapshot.
    RepeatableRead,
    /// Serializable (conflicts are retried by the runner).
    #[default]
    Serializable,
}

/// Options for [`Store::transaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOptions {
    /// Isolation level (backends without levels run their only one).
    pub isolation: Isolation,
    /// Attempts after the first when the backend reports a serialization or write
    /// conflict; then the conflict is returned as `Conflict`.
    pub max_retries: u32,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            isolation: Isolation::Serializable,
            max_retries: 5,
        }
    }
}

/// An open transaction: collections bound to it, and fencing checks.
#[async_trait]
pub trait Transaction: Send + Sync {
    /// The collection, with every read and write inside this transaction.
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>>;
    /// Fails with `LockLost` unless `lease` is the live holder; the check holds
    /// until commit, so a write after it is fenced.
    async fn check_fence(&self, lease: &Lease) -> Result<()>;
}

/// Shared handle to an open transaction.
pub type TxHandle = Arc<dyn Transaction>;

/// The work of a transaction. It may run more than once (conflict retries), so it
/// must have no effects outside the transaction.
pub type TxWork<'a> = dyn Fn(TxHandle) -> BoxFuture<'static, Result<()>> + Send + Sync + 'a;

/// A backend: the factory for every port.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Backend name: `memory`, `postgres`, `mongo` or `scylla`.
    fn backend(&self) -> &'static str;
    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;
    /// Probes the backend.
    async fn health(&self) -> Result<HealthReport>;
    /// Creates tables / collections / indexes for `schemas` and the adapter's own
    /// storage. Idempotent.
    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport>;
    /// The collection for `schema` (migrated beforehand).
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>>;
    /// The change feed.
    fn change_feed(&self) -> Arc<dyn ChangeFeed>;
    /// Leases.
    fn locks(&self) -> Arc<dyn LockManager>;
    /// Idempotency keys.
    fn idempotency(&self) -> Arc<dyn IdempotencyStore>;
    /// Processor checkpoints.
    fn checkpoints(&self) -> Arc<dyn CheckpointStore>;
    /// Runs `work` atomically: all its writes commit, or none if it returns an
    /// error. Conflicts are retried up to `options.max_retries` times.
    async fn transaction<'a>(&self, options: TxOptions, work: &TxWork<'a>) -> Result<()>;
    /// Closes connections; later calls fail with `Connection`.
    async fn close(&self);
}

/// Typed helpers over any [`Store`].
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
/// use std::sync::Arc;
/// use opstore_domain::{Repository, Store, StoreExt};
///
/// // Services hold the store as a trait object, chosen by configuration at run time.
/// let store: Arc<dyn Store> = Arc::new(opstore_memory::MemoryStore::new(Default::default()));
/// store.migrate(&[Node::schema()]).await?;
/// let nodes = store.repository::<Node>()?;
/// nodes.insert(&node("n1", 4, "Healthy")).await?;
/// assert_eq!(nodes.get("n1").await?.map(|n| n.rack), Some(4));
/// # Ok(()) }
/// ```
pub trait StoreExt {
    /// The typed repository of entity `T`.
    fn repository<T: Entity>(&self) -> Result<CollectionRepository<T>>;
}

impl<S: Store + ?Sized> StoreExt for S {
    fn repository<T: Entity>(&self) -> Result<CollectionRepository<T>> {
        Ok(CollectionRepository::new(self.collection(T::schema())?))
    }
}

/// Typed helpers over a transaction handle: the repositories a transaction's work
/// reads and writes through. See [`run_transaction`] for an example.
pub trait TxExt {
    /// The typed repository of `T` inside the transaction.
    fn repository<T: Entity>(&self) -> Result<CollectionRepository<T>>;
}

impl TxExt for TxHandle {
    fn repository<T: Entity>(&self) -> Result<CollectionRepository<T>> {
        Ok(CollectionRepository::new(self.collection(T::schema())?))
    }
}

/// Runs a transaction whose work returns a value.
///
/// The work may run more than once (the runner retries serialization conflicts up
/// to [`TxOptions::max_retries`]), so it must have no effects outside the
/// transaction; an error from the work rolls everything back.
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
/// use opstore_domain::{Repository, StoreExt, TxExt, TxOptions, Update, run_transaction};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// store.repository::<Node>()?.insert(&node("n1", 4, "Healthy")).await?;
///
/// // Read under a row lock, then write, atomically; the closure returns a value.
/// let previous = run_transaction(&store, TxOptions::default(), |tx| async move {
///     let nodes = tx.repository::<Node>()?;
///     let before = nodes.get_for_update("n1").await?.map(|n| n.state);
///     nodes.update_one("n1", &Update::new().set("state", "Quarantined")).await?;
///     nodes.insert(&node("n2", 4, "Quarantined")).await?;
///     Ok(before)
/// })
/// .await?;
/// assert_eq!(previous.as_deref(), Some("Healthy"));
///
/// // A failing transaction leaves nothing behind.
/// let failed = run_transaction(&store, TxOptions::default(), |tx| async move {
///     let nodes = tx.repository::<Node>()?;
///     nodes.insert(&node("n3", 5, "Healthy")).await?;
///     nodes.insert(&node("n1", 5, "Healthy")).await // duplicate key: Conflict
/// })
/// .await;
/// assert!(failed.unwrap_err().is_conflict());
/// assert_eq!(store.repository::<Node>()?.get("n3").await?, None);
/// # Ok(()) }
/// ```
pub async fn run_transaction<R, F, Fut>(
    store: &(impl Store + ?Sized),
    options: TxOptions,
    work: F,
) -> Result<R>
where
    R: Send + 'static,
    F: Fn(TxHandle) -> Fut + Send + Sync,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
    let run = |tx: TxHandle| -> BoxFuture<'static, Result<()>> {
        let slot = Arc::clone(&slot);
        let fut = work(tx);
        Box::pin(async move {
            let value = fut.await?;
            if let Ok(mut guard) = slot.lock() {
                *guard = Some(value);
            }
            Ok(())
        })
    };
    store.transaction(options, &run).await?;
    let value = slot.lock().ok().and_then(|mut g| g.take());
    value.ok_or_else(|| StoreError::Backend {
        message: "transaction finished without a result".into(),
        source: None,
    })
}

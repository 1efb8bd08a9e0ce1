//! Leases with fencing, idempotency keys and processor checkpoints.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::ports::feed::ResumeToken;
use crate::time::Timestamp;

/// A held lease. Only a [`LockManager`] hands one out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    name: String,
    owner: String,
    token: u64,
    expires_at: Timestamp,
}

impl Lease {
    /// Built by lock-manager adapters when they grant or renew a lease.
    pub fn granted(name: String, owner: String, token: u64, expires_at: Timestamp) -> Self {
        Lease {
            name,
            owner,
            token,
            expires_at,
        }
    }
    /// Lease name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Holder.
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// Fencing token: strictly greater than every earlier acquisition of this name.
    pub fn token(&self) -> u64 {
        self.token
    }
    /// When the lease lapses unless renewed (backend clock).
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
}

/// Leases with TTL and fencing tokens.
///
/// Contract: at most one live holder per name; `try_acquire` returns `None` while
/// another owner holds a live lease and takes over an expired one; every
/// acquisition gets a fencing token greater than all earlier ones for that name;
/// `renew` and `release` by a holder whose lease expired or was taken over fail with
/// `LockLost`. Expiry is judged by the backend's clock.
///
/// A holder that stalls past its TTL loses the lease to the next owner, whose
/// fencing token is larger; writes guarded by the stale lease are then rejected
/// inside the transaction ([`Transaction::check_fence`](crate::Transaction::check_fence)):
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
/// use std::time::Duration;
/// use opstore_domain::{
///     Lease, ManualClock, Repository, Store, StoreExt, Timestamp, TxExt, TxOptions, run_transaction,
/// };
/// use opstore_memory::{MemoryConfig, MemoryStore};
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
/// let store = MemoryStore::new(MemoryConfig { clock: Arc::new(clock.clone()), ..Default::default() });
/// let locks = store.locks();
/// let ttl = Duration::from_secs(30);
///
/// let first = locks.try_acquire("drain:n1", "worker-a", ttl).await?.expect("free");
/// assert!(locks.try_acquire("drain:n1", "worker-b", ttl).await?.is_none(), "held by worker-a");
///
/// // worker-a stalls past its TTL; worker-b takes over with a larger fencing token.
/// clock.advance(Duration::from_secs(31));
/// let second = locks.try_acquire("drain:n1", "worker-b", ttl).await?.expect("expired");
/// assert!(second.token() > first.token());
/// assert!(locks.renew(&first, ttl).await.unwrap_err().is_lock_lost());
///
/// // A write guarded by a lease commits only while that lease is the live holder.
/// let guarded_write = |lease: Lease, state: &'static str| {
///     run_transaction(&store, TxOptions::default(), move |tx| {
///         let lease = lease.clone();
///         async move {
///             tx.check_fence(&lease).await?;
///             tx.repository::<Node>()?.insert(&node("n1", 4, state)).await
///         }
///     })
/// };
/// assert!(guarded_write(first, "Drained by a").await.unwrap_err().is_lock_lost());
/// guarded_write(second.clone(), "Drained by b").await?;
/// assert_eq!(store.repository::<Node>()?.get("n1").await?.map(|n| n.state).as_deref(), Some("Drained by b"));
/// locks.release(&second).await?;
/// # Ok(()) }
/// ```
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait LockManager: Send + Sync {
    /// Takes the lease if free or expired.
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Extends a live lease; `LockLost` if it is no longer ours.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;
    /// Gives the lease up; `LockLost` if it is no longer ours.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// Checks that `lease` is still the live holder; `LockLost` otherwise.
    async fn check(&self, lease: &Lease) -> Result<()>;
    /// The live lease on `name`, if any.
    async fn current(&self, name: &str) -> Result<Option<Lease>>;
    /// Every live lease.
    async fn list(&self) -> Result<Vec<Lease>>;
    /// Operator override: drops the lease whoever holds it. Returns whether one was live.
    async fn force_release(&self, name: &str) -> Result<bool>;
}

/// Outcome of [`IdempotencyStore::begin`].
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// First sight of the key: the caller does the work, then `complete`s.
    Started,
    /// Another caller started and has not finished.
    InProgress,
    /// Done before; here is the stored response.
    Completed(Value),
    /// The key was used with a different request fingerprint.
    Mismatch,
}

/// Idempotency keys.
///
/// Contract: `begin` is atomic per key; records expire after their TTL and then
/// count as absent; `complete` of an unknown or expired key is `NotFound`.
///
/// An API call made with a client's idempotency key does its work once; a retry
/// with the same key and request gets the stored response:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> opstore_domain::Result<()> {
/// use std::time::Duration;
/// use opstore_domain::{Begin, Store, json};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let keys = store.idempotency();
/// let ttl = Duration::from_secs(24 * 3600);
/// // The fingerprint identifies the request, e.g. a hash of its body.
/// assert_eq!(keys.begin("req-42", "create cluster c1", ttl).await?, Begin::Started);
/// assert_eq!(keys.begin("req-42", "create cluster c1", ttl).await?, Begin::InProgress);
/// keys.complete("req-42", json!({"cluster": "c1", "status": "creating"})).await?;
///
/// let retry = keys.begin("req-42", "create cluster c1", ttl).await?;
/// assert_eq!(retry, Begin::Completed(json!({"cluster": "c1", "status": "creating"})));
/// // The same key with another request is refused rather than answered wrongly.
/// assert_eq!(keys.begin("req-42", "delete cluster c1", ttl).await?, Begin::Mismatch);
/// // A failed attempt gives its key back so that the client may retry.
/// assert_eq!(keys.begin("req-43", "create cluster c2", ttl).await?, Begin::Started);
/// assert!(keys.abandon("req-43").await?);
/// assert_eq!(keys.begin("req-43", "create cluster c2", ttl).await?, Begin::Started);
/// # Ok(()) }
/// ```
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the key for a request with this fingerprint.
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin>;
    /// Stores the response of a started request.
    async fn complete(&self, key: &str, response: Value) -> Result<()>;
    /// Forgets a started request so it may be retried. Returns whether it existed.
    async fn abandon(&self, key: &str) -> Result<bool>;
    /// Deletes expired records and returns how many.
    async fn purge_expired(&self) -> Result<u64>;
}

/// Durable resume tokens of named processors.
///
/// A processor saves the token of the last change it finished and, after a
/// restart, watches from [`StartAt::After`](crate::StartAt::After) that token:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> opstore_domain::Result<()> {
/// use opstore_domain::{ResumeToken, Store};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let checkpoints = store.checkpoints();
/// assert_eq!(checkpoints.load("quarantine").await?, None); // first run: start from the beginning
///
/// let token: ResumeToken = "00000000000000000007".parse()?;
/// checkpoints.save("quarantine", &token).await?;
/// assert_eq!(checkpoints.load("quarantine").await?, Some(token));
/// assert!(checkpoints.delete("quarantine").await?);
/// # Ok(()) }
/// ```
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Stores (overwrites) the checkpoint of `processor`.
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()>;
    /// The stored checkpoint.
    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>>;
    /// Removes it. Returns whether one existed.
    async fn delete(&self, processor: &str) -> Result<bool>;
}

//! The facade services and programs use: typed repositories, the domain
//! services, and factories for watchers, locks and idempotency.

use std::sync::Arc;

use opstore_domain::entities::all_schemas;
use opstore_domain::{
    ChangeFeed, CheckpointStore, CollectionRepository, Entity, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Store, StoreExt,
};

use crate::config::StoreConfig;
use crate::wiring;

/// An open store with every domain entity migrated.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use opstore_app::{DataStore, StoreConfig};
/// use opstore_domain::entities::errors::{ErrorRecord, Priority};
/// use opstore_domain::{Filter, Repository, Timestamp};
///
/// // `StoreConfig::from_env()` in a service; the URL picks the backend.
/// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
/// assert_eq!(store.health().await?.backend, "memory");
///
/// let errors = store.repository::<ErrorRecord>()?;
/// let mut record = ErrorRecord::new("fp-1", "prod", "api-0", "OOMKilled", Priority::P1, Timestamp::now());
/// record.id = "e1".into();
/// errors.insert(&record).await?;
/// assert_eq!(errors.count(&Filter::eq("namespace", "prod")).await?, 1);
///
/// // Locks, idempotency keys, checkpoints and the change feed come from the same store.
/// let lease = store.locks().try_acquire("janitor", "worker-1", std::time::Duration::from_secs(30)).await?;
/// assert!(lease.is_some());
/// store.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DataStore {
    store: Arc<dyn Store>,
}

impl DataStore {
    /// Connects to the configured backend and migrates every domain entity.
    pub async fn open(config: &StoreConfig) -> Result<Self> {
        let store = wiring::connect(config).await?;
        let data = DataStore { store };
        data.migrate().await?;
        Ok(data)
    }

    /// Wraps an already open store (tests, custom adapters). Does not migrate.
    pub fn from_store(store: Arc<dyn Store>) -> Self {
        DataStore { store }
    }

    /// Creates or updates the storage of every domain entity. Idempotent.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        self.store.migrate(&all_schemas()).await
    }

    /// The underlying store port.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The typed repository of any entity.
    pub fn repository<T: Entity>(&self) -> Result<CollectionRepository<T>> {
        self.store.repository::<T>()
    }

    /// The change feed.
    pub fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        self.store.change_feed()
    }

    /// Leases.
    pub fn locks(&self) -> Arc<dyn LockManager> {
        self.store.locks()
    }

    /// Idempotency keys.
    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        self.store.idempotency()
    }

    /// Processor checkpoints.
    pub fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.store.checkpoints()
    }

    /// Probes the backend.
    pub async fn health(&self) -> Result<HealthReport> {
        self.store.health().await
    }

    /// Closes connections.
    pub async fn close(&self) {
        self.store.close().await;
    }
}

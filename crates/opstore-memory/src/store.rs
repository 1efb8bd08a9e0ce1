//! The [`Store`] port: collections, feed, coordination and transactions of one
//! in-process store.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use opstore_domain::{
    Capabilities, ChangeFeed, CheckpointStore, Clock, Collection, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Schema, Store, StoreError, TxOptions, TxWork,
};

use crate::collection::MemCollection;
use crate::config::MemoryConfig;
use crate::coord::{MemoryCheckpoints, MemoryIdempotency, MemoryLocks};
use crate::error::poisoned;
use crate::feed::{Feed, MemoryFeed};
use crate::state::CollState;
use crate::tx;

/// State shared by a store, its clones, its collections and its transactions.
pub(crate) struct Shared {
    pub clock: Arc<dyn Clock>,
    pub data: RwLock<HashMap<String, CollState>>,
    /// Held by every write and by a whole transaction, so a transaction sees no
    /// concurrent writer and commits without losing anyone's update.
    pub gate: tokio::sync::Mutex<()>,
    pub feed: Arc<Feed>,
    pub locks: Arc<MemoryLocks>,
    pub closed: AtomicBool,
}

impl Shared {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Connection("memory store is closed".into()));
        }
        Ok(())
    }
}

/// The in-process store.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    idempotency: Arc<MemoryIdempotency>,
    checkpoints: Arc<MemoryCheckpoints>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// With a [`ManualClock`](opstore_domain::ManualClock), tests move time by hand:
    /// document TTLs, lease expiry, idempotency records and feed retention all
    /// follow it, so nothing needs to sleep.
    ///
    /// ```
    /// # use std::sync::LazyLock;
    /// # use opstore_domain::{Entity, Field, FieldType, Schema};
    /// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    /// # struct Session { id: String, started_at: opstore_domain::Timestamp }
    /// # static SESSION: LazyLock<Schema> = LazyLock::new(|| {
    /// #     Schema::builder("sessions", "id")
    /// #         .field(Field::new("started_at", FieldType::Timestamp))
    /// #         .ttl("started_at", std::time::Duration::from_secs(3600))
    /// #         .build()
    /// # });
    /// # impl Entity for Session {
    /// #     fn schema() -> &'static Schema { &SESSION }
    /// #     fn key(&self) -> String { self.id.clone() }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> opstore_domain::Result<()> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use opstore_domain::{Clock, ManualClock, Repository, Store, StoreExt, Timestamp};
    /// use opstore_memory::{MemoryConfig, MemoryStore};
    ///
    /// let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    /// let store = MemoryStore::new(MemoryConfig { clock: Arc::new(clock.clone()), ..Default::default() });
    /// assert_eq!(store.backend(), "memory");
    ///
    /// // `sessions` expire an hour after `started_at`.
    /// let sessions = store.repository::<Session>()?;
    /// sessions.insert(&Session { id: "s1".into(), started_at: clock.now() }).await?;
    /// clock.advance(Duration::from_secs(3599));
    /// assert!(sessions.get("s1").await?.is_some());
    /// clock.advance(Duration::from_secs(2));
    /// assert!(sessions.get("s1").await?.is_none());
    ///
    /// // Leases follow the same clock.
    /// let lease = store.locks().try_acquire("sweeper", "w1", Duration::from_secs(10)).await?;
    /// assert!(lease.is_some());
    /// clock.advance(Duration::from_secs(11));
    /// assert!(store.locks().current("sweeper").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn new(config: MemoryConfig) -> Self {
        let clock = config.clock;
        MemoryStore {
            shared: Arc::new(Shared {
                clock: Arc::clone(&clock),
                data: RwLock::new(HashMap::new()),
                gate: tokio::sync::Mutex::new(()),
                feed: Arc::new(Feed::new(config.feed_retention, Arc::clone(&clock))),
                locks: Arc::new(MemoryLocks::new(Arc::clone(&clock))),
                closed: AtomicBool::new(false),
            }),
            idempotency: Arc::new(MemoryIdempotency::new(clock)),
            checkpoints: Arc::new(MemoryCheckpoints::default()),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: true,
            row_locks: true,
            change_feed: true,
            change_feed_order: "collection",
            sort_any_field: true,
            filter_any_field: true,
            aggregates: true,
            claim: true,
            notes: vec!["in-process: data lives as long as the store value".into()],
        }
    }

    async fn health(&self) -> Result<HealthReport> {
        let started = Instant::now();
        self.shared.check_open()?;
        drop(self.shared.data.read().map_err(|_| poisoned())?);
        Ok(HealthReport {
            backend: "memory",
            server: "in-process".into(),
            latency: started.elapsed(),
        })
    }

    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport> {
        self.shared.check_open()?;
        let _gate = self.shared.gate.lock().await;
        let mut data = self.shared.data.write().map_err(|_| poisoned())?;
        let mut report = MigrationReport::default();
        for schema in schemas {
            let step = format!("collection {}", schema.name());
            if data.contains_key(schema.name()) {
                report.unchanged.push(step);
            } else {
                data.insert(schema.name().to_owned(), CollState::new(schema));
                report.applied.push(step);
            }
        }
        Ok(report)
    }

    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        self.shared.check_open()?;
        Ok(Arc::new(MemCollection::new(
            Arc::clone(&self.shared),
            schema,
            None,
        )))
    }

    fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(MemoryFeed(Arc::clone(&self.shared.feed)))
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::clone(&self.shared.locks) as Arc<dyn LockManager>
    }

    fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::clone(&self.idempotency) as Arc<dyn IdempotencyStore>
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::clone(&self.checkpoints) as Arc<dyn CheckpointStore>
    }

    async fn transaction<'a>(&self, _options: TxOptions, work: &TxWork<'a>) -> Result<()> {
        self.shared.check_open()?;
        tx::run(&self.shared, work).await
    }

    async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

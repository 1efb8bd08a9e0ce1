//! opstore for services: one dependency that brings the domain API, the
//! application layer and the adapters a build chooses by Cargo feature.
//!
//! ```toml
//! [dependencies]
//! opstore = { version = "0.1", features = ["postgres"] }   # memory is the default
//!
//! [dev-dependencies]
//! opstore = { version = "0.1", features = ["postgres", "mocks"] }
//! ```
//!
//! Features: `memory` (default), `sqlite` (the embedded persistent store, one
//! file: `sqlite://path/to/ops.db`), `postgres`, `mongo`, `scylla` (each compiles
//! one adapter in), `mocks` (mockall mocks of every port, in [`mocks`] and the prelude).
//!
//! ```
//! use std::time::Duration;
//! use opstore::prelude::*;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A test needs no adapter crate: the configuration carries a clock to move by hand.
//! let clock = ManualClock::new(Timestamp::now());
//! let mut config = StoreConfig::from_url("memory://")?;
//! config.test_clock = Some(clock.clone());
//! let store = DataStore::open(&config).await?;
//!
//! let lease = store.store().locks().try_acquire("nightly", "worker-1", Duration::from_secs(5)).await?;
//! assert!(lease.is_some());
//! clock.advance(Duration::from_secs(6));
//! let taken_over = store.store().locks().try_acquire("nightly", "worker-2", Duration::from_secs(5)).await?;
//! assert!(taken_over.is_some());
//! # Ok::<(), StoreError>(()) }).unwrap();
//! ```

pub use opstore_app as app;
pub use opstore_domain as domain;

pub use opstore_app::{
    Backend, DataStore, ExpiryClockSource, StoreConfig, StoreUrl, TlsFiles, lease_keeper,
    processor, services, worker,
};
pub use opstore_domain::{Result, StoreError, entities};

/// Cancels work in progress; the lease keeper and processors stop on it.
pub use tokio_util::sync::CancellationToken;

/// mockall mocks of every port (feature `mocks`).
#[cfg(feature = "mocks")]
pub mod mocks {
    pub use opstore_domain::ports::collection::{MockCollection, MockRepository};
    pub use opstore_domain::ports::coordination::{
        MockCheckpointStore, MockIdempotencyStore, MockLockManager,
    };
    pub use opstore_domain::ports::feed::MockChangeFeed;
    pub use opstore_domain::ports::store::MockStore;
}

/// What a service needs in scope: `use opstore::prelude::*;`.
pub mod prelude {
    pub use opstore_app::{DataStore, StoreConfig};
    pub use opstore_domain::entities::{
        automation::*, control_plane::*, dead_letter::*, errors::*, health::*,
    };
    pub use opstore_domain::{
        Agg, Begin, Capabilities, ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, CheckpointStore,
        Clock, Collection, Entity, Filter, IdempotencyStore, Lease, LockManager, ManualClock, Page,
        Query, Repository, Result, ResumeToken, SortDir, StartAt, Store, StoreError, StoreExt,
        Timestamp, Transaction, TxExt, TxOptions, Update, UpdateCount, Value, WatchRequest,
        from_document, json, run_transaction, to_document,
    };

    #[cfg(feature = "mocks")]
    pub use crate::mocks::*;

    pub use tokio_util::sync::CancellationToken;
}

// The Rust examples of the README and the guides run as doc tests of this crate,
// so they always compile against the facade they describe.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc = include_str!("../../../docs/guides/control-plane.md")]
#[cfg(doctest)]
pub struct ControlPlaneGuideDoctests;

#[doc = include_str!("../../../docs/guides/error-watcher.md")]
#[cfg(doctest)]
pub struct ErrorWatcherGuideDoctests;

#[doc = include_str!("../../../docs/guides/health-monitor.md")]
#[cfg(doctest)]
pub struct HealthMonitorGuideDoctests;

#[doc = include_str!("../../../docs/guides/job-automation.md")]
#[cfg(doctest)]
pub struct JobAutomationGuideDoctests;

//! opstore's domain: entities, value types, the portable query model and the port
//! traits every storage adapter implements.
//!
//! This crate performs no I/O and depends on no database driver or async runtime.
//!
//! With the `mocks` feature every port has a mockall mock for downstream unit tests:
//!
//! ```
//! # #[cfg(feature = "mocks")] {
//! use opstore_domain::ports::coordination::MockLockManager;
//! let mut locks = MockLockManager::new();
//! locks.expect_try_acquire().returning(|_, _, _| Ok(None));
//! # }
//! ```

pub mod breaker;
pub mod check;
pub mod entities;
pub mod error;
pub mod eval;
pub mod ports;
pub mod query;
pub mod redact;
pub mod schema;
pub mod time;

pub use check::{AggField, Checked};
pub use error::{BoxError, Result, StoreError};
pub use ports::collection::{
    Collection, CollectionRepository, Repository, StoredDoc, Upserted, from_document, from_stored,
    to_document,
};
pub use ports::coordination::{Begin, CheckpointStore, IdempotencyStore, Lease, LockManager};
pub use ports::feed::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, ResumeToken, StartAt, WatchRequest,
};
pub use ports::store::{
    Capabilities, HealthReport, Isolation, MigrationReport, Store, StoreExt, Transaction, TxExt,
    TxHandle, TxOptions, TxWork, run_transaction,
};
pub use query::{Agg, Filter, Page, Query, SortDir, SortKey, Update, UpdateCount, UpdateOp};
pub use schema::{Entity, Field, FieldType, ScalarType, Schema, SchemaBuilder, Ttl};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

/// Re-exported so entity definitions and filters can build values.
pub use serde_json::{Value, json};

//! opstore's ScyllaDB adapter on the `scylla` driver.
//!
//! A table per entity (partition key = entity key, clustering columns from the
//! schema, typed columns plus the whole document in `doc`), secondary indexes
//! for indexed fields, unique fields through LWT claim tables, leases and
//! idempotency keys through lightweight transactions, the change feed through
//! CDC log tables. Reads the data model cannot serve efficiently are refused
//! with `Unsupported` unless [`ScanPolicy::Bounded`] opts into a bounded scan.
//! Multi-document transactions are not available.
//!
//! Every module talks to the driver through the [`CqlSession`] seam.
//!
//! A [`ScyllaConfig`] comes from a URL; its `Debug` output names the user but
//! never the password:
//!
//! ```
//! use opstore_scylla::ScyllaConfig;
//!
//! let config = ScyllaConfig::from_url(
//!     "scylla://app:s3cret@node1:9042,node2/ops?consistency=local_quorum&timeout=5s",
//! )?;
//! assert_eq!(config.hosts, ["node1:9042", "node2:9042"]);
//! assert_eq!(config.keyspace, "ops");
//! let shown = format!("{config:?}");
//! assert!(shown.contains("app") && !shown.contains("s3cret"), "{shown}");
//! // Errors never repeat the password either.
//! let err = ScyllaConfig::from_url("scylla://app:s3cret@node1").unwrap_err();
//! assert!(err.is_validation() && !err.to_string().contains("s3cret"));
//! # Ok::<(), opstore_domain::StoreError>(())
//! ```
//!
//! Connecting needs a cluster:
//!
//! ```no_run
//! # async fn connect() -> opstore_domain::Result<()> {
//! use opstore_domain::Store;
//! use opstore_scylla::{ScyllaConfig, ScyllaStore};
//!
//! let store = ScyllaStore::connect(ScyllaConfig::from_url("scylla://node1:9042/ops")?).await?;
//! store.migrate(&opstore_domain::entities::all_schemas()).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod codegen;
pub mod collection;
pub mod config;
pub mod coord;
pub mod driver;
pub mod error;
pub mod exec;
pub mod feed;
pub mod flavour;
pub mod planner;
pub mod session;
mod store;
pub mod table;
pub mod tls;
pub mod value;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use config::{
    BreakerConfig, Credentials, FeedConfig, Replication, ScanPolicy, ScyllaConfig, ScyllaTls,
    Secret,
};
pub use driver::DriverSession;
pub use flavour::Flavour;
pub use opstore_domain::breaker::{Admission, BreakerState, CircuitBreaker};
pub use session::{CqlSession, DriverError};
pub use store::ScyllaStore;

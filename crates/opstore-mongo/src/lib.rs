//! opstore adapter for MongoDB, on the official `mongodb` driver.
//!
//! Layout: a collection per entity with `_id` = the entity key (the key field is
//! stored under its own name too), indexes from the schema
//! ([`codegen::generate`] writes them to `schema/indexes.json`), queries and
//! updates as native operator documents, aggregates as pipelines, the change
//! feed on change streams, leases and idempotency keys as single-document
//! find-and-modify with the server's clock, transactions through sessions.
//!
//! Transactions and change streams need a replica set; on a standalone server
//! [`MongoStore`] reports both as unavailable in its capabilities.
//!
//! ```no_run
//! # async fn demo() -> opstore_domain::Result<()> {
//! use opstore_mongo::{MongoConfig, MongoStore};
//! let store = MongoStore::connect(MongoConfig::new("mongodb://127.0.0.1:27017/?replicaSet=rs0", "ops")).await?;
//! # let _ = store; Ok(()) }
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod codegen;
mod collection;
pub mod config;
mod coord;
mod ctx;
mod error;
mod feed;
mod store;
pub mod translate;
mod tx;

pub use config::{ExpiryClock, MongoConfig};
pub use store::MongoStore;

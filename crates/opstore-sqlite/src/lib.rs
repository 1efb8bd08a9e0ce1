//! opstore adapter for SQLite, on sqlx: the embedded store whose data survives
//! a restart, in one file.
//!
//! ```no_run
//! # async fn demo() -> opstore_domain::Result<()> {
//! use opstore_domain::Store;
//! use opstore_sqlite::{SqliteConfig, SqliteStore};
//!
//! let store = SqliteStore::connect(SqliteConfig::from_url("sqlite://data/ops.db")).await?;
//! store.migrate(&opstore_domain::entities::all_schemas()).await?;
//! # Ok(()) }
//! ```
//!
//! Storage layout: a table per entity with the document as JSON text in `doc`,
//! the key as the primary key and every declared indexed field as a virtual
//! generated column named by its path, indexed (see [`schema`]; `cargo xtask
//! codegen` writes the DDL to `schema/opstore.sql`); the adapter's own tables
//! are prefixed `opstore_`. Plain SQL reads it:
//! `SELECT id, "status.state", doc ->> '$.name' FROM items`.
//!
//! The database runs in WAL mode: readers (a connection pool) never wait for
//! the writer. Writes are serialised, in process on the store's one writer
//! connection and across processes by `BEGIN IMMEDIATE`, so every write
//! transaction sees the latest commit.

// The adapter template (docs/architecture.md): config, store, schema, translate,
// collection, feed, coord, tx, error; `exec` runs every statement.
mod collection;
mod config;
mod coord;
mod error;
mod exec;
mod feed;
pub mod schema;
mod store;
mod translate;
mod tx;

#[cfg(feature = "bench")]
pub mod bench;
pub mod codegen;

pub use config::{MAX_DOCUMENT_BYTES, SqliteClock, SqliteConfig};
pub use store::SqliteStore;

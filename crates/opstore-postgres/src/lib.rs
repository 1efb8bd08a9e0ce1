//! opstore adapter for PostgreSQL, on sqlx.
//!
//! ```no_run
//! # async fn demo() -> opstore_domain::Result<()> {
//! use opstore_domain::Store;
//! use opstore_postgres::{PgConfig, PgStore};
//!
//! let mut config = PgConfig::from_url("postgres://app:secret@localhost/ops?sslmode=prefer");
//! config.schema = Some("ops".into());
//! let store = PgStore::connect(config).await?;
//! store.migrate(&opstore_domain::entities::all_schemas()).await?;
//! # Ok(()) }
//! ```
//!
//! Storage layout: a table per entity with the document in `doc jsonb` and the
//! key and indexed fields as typed generated columns (see [`schema`]); the
//! adapter's own tables are prefixed `opstore_`. Reads of plain SQL work:
//! `SELECT "id", "status.state", doc FROM items`.

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

#[cfg(test)]
mod statement_structure;

pub use config::{MAX_DOCUMENT_BYTES, PgConfig};
pub use store::PgStore;

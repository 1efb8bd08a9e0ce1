//! opstore's in-process adapter: the embedded default, and the reference
//! semantics every other adapter is tested against.
//!
//! Documents live in memory as JSON trees with secondary indexes on declared
//! indexed fields; expiry, leases and change-feed retention follow a [`Clock`] that
//! tests can drive ([`opstore_domain::ManualClock`]).
//!
//! ```
//! # tokio_test_shim::run(async {
//! use opstore_memory::{MemoryConfig, MemoryStore};
//! use opstore_domain::Store;
//! let store = MemoryStore::new(MemoryConfig::default());
//! assert_eq!(store.backend(), "memory");
//! # });
//! # mod tokio_test_shim { pub fn run<F: std::future::Future>(f: F) -> F::Output {
//! #   tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) } }
//! ```

#[cfg(feature = "bench")]
pub mod bench;
mod collection;
mod config;
mod coord;
mod error;
mod feed;
mod state;
mod store;
mod tx;

pub use config::MemoryConfig;
pub use feed::FeedRetention;
pub use store::MemoryStore;

//! opstore's application layer: configuration and wiring that turn a URL into a
//! store, the [`DataStore`] facade, the domain services of the four systems
//! opstore serves, event processors, and the lease keeper.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use opstore_app::{DataStore, StoreConfig};
//! let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
//! assert_eq!(store.store().backend(), "memory");
//! # Ok::<(), opstore_domain::StoreError>(()) }).unwrap();
//! ```

pub mod config;
pub mod datastore;
pub mod lease_keeper;
pub mod processor;
pub mod services;
pub mod wiring;
pub mod worker;

pub use config::{Backend, ExpiryClockSource, StoreConfig, StoreUrl, TlsFiles};
pub use datastore::DataStore;

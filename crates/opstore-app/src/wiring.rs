//! The one place outside the adapter crates that names adapter types: it turns a
//! [`StoreConfig`] into a store.

use std::sync::Arc;

use opstore_domain::{Result, Store, StoreError};

use crate::config::{Backend, StoreConfig};

/// Opens the store a configuration selects. A backend whose Cargo feature is off
/// is a `Validation` error naming the feature.
pub async fn connect(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config.url.backend() {
        #[cfg(feature = "memory")]
        Backend::Memory => Ok(Arc::new(opstore_memory::MemoryStore::new(
            opstore_memory::MemoryConfig::default(),
        ))),
        other => Err(feature_off(other)),
    }
}

fn feature_off(backend: Backend) -> StoreError {
    StoreError::Validation(format!(
        "the {backend:?} backend is not compiled in: enable the `{}` feature of opstore-app",
        backend.feature()
    ))
}

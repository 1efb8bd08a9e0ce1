//! Domain services, one module per source system.
//!
//! Each service is built from an `Arc<dyn Store>` (its repositories come from the
//! store) or from explicit `Arc<dyn Repository<T>>` parts, so unit tests can
//! substitute `MockRepository<T>` (feature `mocks` of `opstore-domain`). Services
//! return the domain's [`StoreError`]: `NotFound`, `Conflict` and `LockHeld` mean
//! what they mean in the ports.

pub mod automation;
pub mod control_plane;
pub mod errors;
pub mod health;

use std::sync::Arc;

use opstore_domain::{Entity, Repository, Result, Store, StoreError, StoreExt};

/// A new URL-safe unique id: 32 lowercase hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new URL-safe unique id with a readable prefix, e.g. `clu_…`.
pub fn new_prefixed_id(prefix: &str) -> String {
    format!("{prefix}_{}", new_id())
}

/// The typed repository of `T` from `store`, as the shared trait object services hold.
pub fn repository<T: Entity>(store: &dyn Store) -> Result<Arc<dyn Repository<T>>> {
    Ok(Arc::new(store.repository::<T>()?))
}

/// Stores `doc` whole: replaces the stored entity with its key, or inserts it.
/// A concurrent insert of the same key makes the second writer replace.
pub async fn put<T: Entity>(repo: &dyn Repository<T>, doc: &T) -> Result<()> {
    match repo.replace(doc).await {
        Err(e) if e.is_not_found() => match repo.insert(doc).await {
            Err(e) if e.is_conflict() => repo.replace(doc).await,
            other => other,
        },
        other => other,
    }
}

/// `NotFound` naming the operation, collection and key.
pub fn not_found<T: Entity>(op: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!(
        "{op}: no `{}` with key `{key}`",
        T::schema().name()
    ))
}

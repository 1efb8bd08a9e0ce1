//! The one failure the memory adapter has of its own: a lock poisoned by a
//! panicking writer.

use opstore_domain::StoreError;

/// A lock that a panicking thread left poisoned; the data behind it may be half
/// written, so the store refuses to go on.
pub(crate) fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "memory store lock poisoned".into(),
        source: None,
    }
}

//! Repository CRUD, queries, pages, updates and aggregates.

use opstore_domain::{Repository, StoreExt, Update};

use crate::Harness;
use crate::fixtures::{Item, item};

/// Inserted documents come back equal.
pub async fn insert_then_get_returns_the_document(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let doc = item("a").count(3).tags(&["x", "y"]).note("hello").build();
    repo.insert(&doc).await.unwrap();
    assert_eq!(repo.get("a").await.unwrap(), Some(doc));
}

/// `get` of an absent key is `Ok(None)`, not an error.
pub async fn get_missing_key_is_none(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    assert_eq!(repo.get("nope").await.unwrap(), None);
}

/// `update_one` of an absent key is `NotFound`.
pub async fn update_of_missing_key_is_not_found(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.update_one("nope", &Update::new().inc("count", 1)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

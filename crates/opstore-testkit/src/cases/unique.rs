//! Uniqueness: duplicate keys and unique fields are `Conflict`, and a conflicting
//! batch writes nothing.

use opstore_domain::{Filter, Repository, StoreExt, Update, json};

use crate::Harness;
use crate::fixtures::{Item, item};

/// Inserting an existing key is `Conflict` and keeps the stored document.
pub async fn duplicate_key_is_conflict(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    let err = repo.insert(&item("a").count(2).build()).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 1);
}

/// A `Conflict` error names the collection and the key.
pub async fn conflict_error_names_collection_and_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("dup-key-7").build()).await.unwrap();
    let msg = repo
        .insert(&item("dup-key-7").build())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("items") && msg.contains("dup-key-7"), "{msg}");
}

/// Inserting a duplicate unique field is `Conflict`.
pub async fn duplicate_unique_field_is_conflict(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    let err = repo
        .insert(&item("b").sku("S-1").build())
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.get("b").await.unwrap(), None);
}

/// Documents without the unique field do not collide with each other.
pub async fn absent_unique_fields_do_not_collide(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    repo.update_one("b", &Update::new().set("note", "still fine"))
        .await
        .unwrap();
    assert_eq!(repo.count(&Filter::missing("sku")).await.unwrap(), 2);
}

/// Updating a unique field to a value another document holds is `Conflict`.
pub async fn update_to_duplicate_unique_field_is_conflict(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.insert(&item("b").sku("S-2").build()).await.unwrap();
    let err = repo
        .update_one("b", &Update::new().set("sku", "S-1").set("note", "x"))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let b = repo.get("b").await.unwrap().unwrap();
    assert_eq!((b.sku.as_deref(), b.note), (Some("S-2"), None));
}

/// Replacing with a unique value another document holds is `Conflict`.
pub async fn replace_with_duplicate_unique_field_is_conflict(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    let err = repo
        .replace(&item("b").sku("S-1").count(5).build())
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.get("b").await.unwrap().unwrap().count, 0);
}

/// `update_many` giving several documents one unique value is `Conflict` and
/// writes none of them, not even the other fields of the update.
pub async fn update_many_onto_one_unique_value_writes_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for k in ["a", "b", "c"] {
        repo.insert(&item(k).build()).await.unwrap();
    }
    let err = repo
        .update_many(
            &Filter::all(),
            &Update::new().set("sku", "S-1").set("note", "x"),
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.count(&Filter::exists("sku")).await.unwrap(), 0);
    assert_eq!(repo.count(&Filter::exists("note")).await.unwrap(), 0);
}

/// A document may keep its own unique value when it is updated or replaced.
pub async fn rewriting_own_unique_value_is_not_conflict(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.update_one("a", &Update::new().set("sku", "S-1").inc("count", 1))
        .await
        .unwrap();
    repo.replace(&item("a").sku("S-1").count(9).build())
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 9);
}

/// Once the holder is deleted, its unique value is free again.
pub async fn unique_value_is_free_after_delete(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.delete("a").await.unwrap();
    repo.insert(&item("b").sku("S-1").build()).await.unwrap();
    assert_eq!(
        repo.get_by_field("sku", json!("S-1"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "b"
    );
}

/// Once the holder changes its value, the old one is free again.
pub async fn unique_value_is_free_after_change(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.update_one("a", &Update::new().unset("sku"))
        .await
        .unwrap();
    repo.insert(&item("b").sku("S-1").build()).await.unwrap();
    assert_eq!(repo.count(&Filter::eq("sku", "S-1")).await.unwrap(), 1);
}

/// `insert_many` with a key that already exists writes none of the batch.
pub async fn insert_many_with_existing_key_writes_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    let batch = [
        item("a").build(),
        item("b").count(5).build(),
        item("c").build(),
    ];
    let err = repo.insert_many(&batch).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
    assert_eq!(repo.get("b").await.unwrap().unwrap().count, 0);
}

/// `insert_many` with a key repeated inside the batch writes none of it.
pub async fn insert_many_with_repeated_key_writes_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let batch = [item("a").build(), item("b").build(), item("a").build()];
    let err = repo.insert_many(&batch).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// `insert_many` with a unique value repeated inside the batch writes none of it.
pub async fn insert_many_with_repeated_unique_field_writes_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let batch = [
        item("a").sku("S").build(),
        item("b").build(),
        item("c").sku("S").build(),
    ];
    let err = repo.insert_many(&batch).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// `insert_many` with one invalid document writes none of the batch.
pub async fn insert_many_with_invalid_document_writes_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let batch = [item("a").build(), item("").build()];
    let err = repo.insert_many(&batch).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

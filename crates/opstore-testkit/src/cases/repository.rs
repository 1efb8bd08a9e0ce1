//! Repository CRUD: insert, get, lookups, replace, delete and not-found semantics.

use opstore_domain::{Filter, Query, Repository, StoreExt, Timestamp, Update, json};

use crate::Harness;
use crate::fixtures::{Item, item, keys, strs};

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
    let err = repo
        .update_one("nope", &Update::new().inc("count", 1))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// A `NotFound` error names the collection and the key it looked for.
pub async fn not_found_error_names_collection_and_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo
        .update_one("missing-key-42", &Update::new().inc("count", 1))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("items") && msg.contains("missing-key-42"),
        "{msg}"
    );
}

/// Every field type survives the round trip: nested objects, optionals, JSON,
/// maps, sets, floats and timestamps.
pub async fn every_field_type_round_trips(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let mut doc = item("full")
        .sku("SKU-1")
        .count(-7)
        .price(0.1)
        .active(false)
        .tags(&["b", "a", "b"])
        .state("running")
        .meta(json!({"a": {"b": [1, 2.5, "x", null, true]}, "n": null}))
        .note("note")
        .at(12)
        .weight(3.25)
        .label("team", "infra")
        .label("zone", "eu-1")
        .roles(&["admin"])
        .build();
    doc.status.since = Some(Timestamp::from_micros(1_767_225_600_123_456));
    repo.insert(&doc).await.unwrap();
    assert_eq!(repo.get("full").await.unwrap(), Some(doc));
}

/// The full `i64` range is kept exactly.
pub async fn extreme_integers_round_trip(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("max").count(i64::MAX).build())
        .await
        .unwrap();
    repo.insert(&item("min").count(i64::MIN).build())
        .await
        .unwrap();
    assert_eq!(repo.get("max").await.unwrap().unwrap().count, i64::MAX);
    assert_eq!(repo.get("min").await.unwrap().unwrap().count, i64::MIN);
}

/// Non-ASCII text and the empty string are stored unchanged.
pub async fn unicode_and_empty_strings_round_trip(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let doc = item("ü-ключ-键").name("Grüße 🚀 日本語").note("").build();
    repo.insert(&doc).await.unwrap();
    assert_eq!(repo.get("ü-ключ-键").await.unwrap(), Some(doc));
}

/// `insert_many` stores every document and returns how many.
pub async fn insert_many_stores_all_and_returns_count(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..25)
        .map(|i| item(&format!("k{i:02}")).count(i).build())
        .collect();
    assert_eq!(repo.insert_many(&docs).await.unwrap(), 25);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 25);
    assert_eq!(repo.get("k17").await.unwrap(), Some(docs[17].clone()));
}

/// `insert_many` of nothing writes nothing and returns 0.
pub async fn insert_many_empty_returns_zero(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    assert_eq!(repo.insert_many(&[]).await.unwrap(), 0);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// `delete` returns true for an existing document and removes it.
pub async fn delete_existing_returns_true_and_removes(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    assert!(repo.delete("a").await.unwrap());
    assert_eq!(repo.get("a").await.unwrap(), None);
    assert!(repo.get("b").await.unwrap().is_some());
}

/// `delete` of an absent key is `Ok(false)`, not an error.
pub async fn delete_missing_returns_false(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    assert!(!repo.delete("nope").await.unwrap());
}

/// A deleted key can be inserted again.
pub async fn deleted_key_can_be_reinserted(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    repo.delete("a").await.unwrap();
    repo.insert(&item("a").count(2).build()).await.unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 2);
}

/// `delete_many` removes exactly the matches and returns how many.
pub async fn delete_many_returns_count_of_removed(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for i in 0..10 {
        repo.insert(&item(&format!("k{i}")).count(i).build())
            .await
            .unwrap();
    }
    assert_eq!(repo.delete_many(&Filter::lt("count", 4)).await.unwrap(), 4);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 6);
    assert_eq!(repo.count(&Filter::lt("count", 4)).await.unwrap(), 0);
}

/// `delete_many` with no match removes nothing and returns 0.
pub async fn delete_many_without_match_returns_zero(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    assert_eq!(
        repo.delete_many(&Filter::eq("name", "zzz")).await.unwrap(),
        0
    );
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

/// `get_by_field` on an indexed field finds the document.
pub async fn get_by_indexed_field_finds_document(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").name("alpha").build()).await.unwrap();
    repo.insert(&item("b").name("beta").build()).await.unwrap();
    let found = repo
        .get_by_field("name", json!("beta"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "b");
}

/// `get_by_field` on an unindexed field finds the document too.
pub async fn get_by_unindexed_field_finds_document(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(5).build()).await.unwrap();
    repo.insert(&item("b").count(6).build()).await.unwrap();
    assert_eq!(
        repo.get_by_field("count", json!(6))
            .await
            .unwrap()
            .unwrap()
            .id,
        "b"
    );
}

/// `get_by_field` without a match is `Ok(None)`.
pub async fn get_by_field_without_match_is_none(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    assert_eq!(
        repo.get_by_field("name", json!("nobody")).await.unwrap(),
        None
    );
}

/// `get_by_field` with several matches returns the first in default order (key).
pub async fn get_by_field_with_many_matches_returns_first_by_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for id in ["m", "c", "x"] {
        repo.insert(&item(id).name("same").build()).await.unwrap();
    }
    assert_eq!(
        repo.get_by_field("name", json!("same"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "c"
    );
}

/// `find_one` without a match is `Ok(None)`.
pub async fn find_one_without_match_is_none(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    assert_eq!(repo.find_one(&Filter::gt("count", 1)).await.unwrap(), None);
}

/// `exists` is true with a match and false without one.
pub async fn exists_reports_whether_anything_matches(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    assert!(!repo.exists(&Filter::all()).await.unwrap());
    repo.insert(&item("a").count(3).build()).await.unwrap();
    assert!(repo.exists(&Filter::eq("count", 3)).await.unwrap());
    assert!(!repo.exists(&Filter::eq("count", 4)).await.unwrap());
}

/// `count` counts only the matches.
pub async fn count_counts_matches(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for i in 0..7 {
        repo.insert(&item(&format!("k{i}")).active(i % 2 == 0).build())
            .await
            .unwrap();
    }
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 7);
    assert_eq!(repo.count(&Filter::eq("active", true)).await.unwrap(), 4);
}

/// `replace` swaps the whole document, dropping fields the new one lacks.
pub async fn replace_swaps_whole_document(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").note("old").sku("S1").count(1).build())
        .await
        .unwrap();
    let new = item("a").count(9).name("renamed").build();
    repo.replace(&new).await.unwrap();
    assert_eq!(repo.get("a").await.unwrap(), Some(new));
}

/// `replace` of an absent key is `NotFound` and creates nothing.
pub async fn replace_of_missing_key_is_not_found(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.replace(&item("ghost").build()).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(repo.get("ghost").await.unwrap(), None);
}

/// `update_one` returns the document as it is after the update.
pub async fn update_one_returns_the_updated_document(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").count(1).build()).await.unwrap();
    let after = repo
        .update_one("a", &Update::new().inc("count", 2).set("note", "n"))
        .await
        .unwrap();
    assert_eq!(after.count, 3);
    assert_eq!(after.note.as_deref(), Some("n"));
    assert_eq!(repo.get("a").await.unwrap(), Some(after));
}

/// Collections are separate: a key in one does not exist in another.
pub async fn collections_do_not_share_keys(h: &impl Harness) {
    let store = h.store().await;
    let items = store.repository::<Item>().unwrap();
    let tickets = store.repository::<crate::fixtures::Ticket>().unwrap();
    items.insert(&item("same").build()).await.unwrap();
    assert_eq!(tickets.get("same").await.unwrap(), None);
}

/// Each store from the harness is isolated: a fresh one starts empty.
pub async fn fresh_store_starts_empty(h: &impl Harness) {
    let first = h.store().await;
    first
        .repository::<Item>()
        .unwrap()
        .insert(&item("a").build())
        .await
        .unwrap();
    let second = h.store().await;
    let repo = second.repository::<Item>().unwrap();
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
    assert_eq!(keys(&repo.find(&Query::new()).await.unwrap()), strs(&[]));
}

/// The health probe answers with the backend's name.
pub async fn health_reports_backend_name(h: &impl Harness) {
    let store = h.store().await;
    let report = store.health().await.unwrap();
    assert_eq!(report.backend, store.backend());
    assert!(!report.backend.is_empty());
}

/// Migrating the fixture schemas again changes nothing and keeps the data.
pub async fn migrate_is_idempotent_and_keeps_data(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    let report = store.migrate(&crate::fixtures::schemas()).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert!(repo.get("a").await.unwrap().is_some());
}

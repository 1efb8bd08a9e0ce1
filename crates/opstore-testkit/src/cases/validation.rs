//! Input validation: keys, documents and field paths are checked before anything
//! reaches the backend, and hostile text in values is stored as inert data.

use opstore_domain::{Agg, Entity, Filter, Query, Repository, StoreExt, Update, json};

use crate::Harness;
use crate::fixtures::{Item, item};

const HOSTILE_PATHS: [&str; 8] = [
    "a'); drop table x; --",
    "$where",
    "name; DROP TABLE items",
    "status.state' OR '1'='1",
    "meta.$gt",
    "meta..a",
    "",
    "name\u{0}",
];

/// A key longer than the limit is `Validation`.
pub async fn oversized_key_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let key = "k".repeat(opstore_domain::schema::MAX_KEY_LEN + 1);
    let err = repo.insert(&item(&key).build()).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// A key exactly at the limit is accepted.
pub async fn key_at_limit_is_accepted(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let key = "k".repeat(opstore_domain::schema::MAX_KEY_LEN);
    repo.insert(&item(&key).build()).await.unwrap();
    assert!(repo.get(&key).await.unwrap().is_some());
}

/// An empty key is `Validation`.
pub async fn empty_key_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.insert(&item("").build()).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
}

/// A key with control characters is `Validation`.
pub async fn control_characters_in_key_are_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for key in ["a\nb", "tab\there", "nul\u{0}", "esc\u{1b}[0m"] {
        let err = repo.insert(&item(key).build()).await.unwrap_err();
        assert!(err.is_validation(), "{key:?}: {err}");
    }
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// A document missing a required field is `Validation` naming it.
pub async fn document_missing_required_field_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let coll = store.collection(Item::schema()).unwrap();
    let mut doc = opstore_domain::to_document(&item("a").build()).unwrap();
    doc.as_object_mut().unwrap().remove("price");
    let err = coll.insert(doc).await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("price"),
        "{err}"
    );
    assert_eq!(coll.get("a").await.unwrap(), None);
}

/// A document with a field of the wrong type is `Validation` naming it.
pub async fn document_with_wrong_field_type_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let coll = store.collection(Item::schema()).unwrap();
    let mut doc = opstore_domain::to_document(&item("a").build()).unwrap();
    doc["status"]["state"] = json!(42);
    let err = coll.insert(doc).await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("status.state"),
        "{err}"
    );
}

/// A document that is not an object, or lacks a string key, is `Validation`.
pub async fn malformed_document_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let coll = store.collection(Item::schema()).unwrap();
    assert!(
        coll.insert(json!([1, 2]))
            .await
            .unwrap_err()
            .is_validation()
    );
    let mut doc = opstore_domain::to_document(&item("a").build()).unwrap();
    doc["id"] = json!(7);
    assert!(coll.insert(doc).await.unwrap_err().is_validation());
}

/// A replacement that violates the schema is `Validation` and keeps the stored document.
pub async fn invalid_replace_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let coll = store.collection(Item::schema()).unwrap();
    let good = opstore_domain::to_document(&item("a").count(3).build()).unwrap();
    coll.insert(good.clone()).await.unwrap();
    let mut bad = good.clone();
    bad["count"] = json!("three");
    assert!(coll.replace(bad).await.unwrap_err().is_validation());
    assert_eq!(coll.get("a").await.unwrap().unwrap()["count"], json!(3));
}

/// A filter on an undeclared path is `Validation` naming it.
pub async fn filter_unknown_path_is_validation_naming_it(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.count(&Filter::eq("colour", "red")).await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("colour"),
        "{err}"
    );
}

/// A filter operand of the wrong type is `Validation` naming the field.
pub async fn filter_wrong_operand_type_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.count(&Filter::eq("count", "seven")).await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("count"),
        "{err}"
    );
    let err = repo
        .count(&Filter::is_in("active", [json!(true), json!("yes")]))
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("active"),
        "{err}"
    );
}

/// A range comparison on a list or object field is `Validation`.
pub async fn range_on_non_scalar_field_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo.count(&Filter::gt("tags", "a")).await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("tags"),
        "{err}"
    );
    assert!(
        repo.count(&Filter::lt("status", 1))
            .await
            .unwrap_err()
            .is_validation()
    );
}

/// Sorting on a field that is not a scalar is `Validation` naming it.
pub async fn sort_on_unsortable_field_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for path in ["tags", "meta", "status", "labels"] {
        let err = repo.find(&Query::new().sort_asc(path)).await.unwrap_err();
        assert!(
            err.is_validation() && err.to_string().contains(path),
            "{path}: {err}"
        );
    }
}

/// Sorting on an undeclared field is `Validation` naming it.
pub async fn sort_on_unknown_field_is_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let err = repo
        .find_page(&Query::new().sort_desc("rank"))
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("rank"),
        "{err}"
    );
}

/// Injection strings used as filter paths are `Validation`, never query text.
pub async fn hostile_filter_paths_are_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    for path in HOSTILE_PATHS {
        let err = repo.count(&Filter::eq(path, "x")).await.unwrap_err();
        assert!(err.is_validation(), "{path:?}: {err}");
        let err = repo
            .find(&Query::filter(Filter::exists(path)))
            .await
            .unwrap_err();
        assert!(err.is_validation(), "{path:?}: {err}");
    }
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

/// Injection strings used as sort, update or aggregate paths are `Validation`.
pub async fn hostile_paths_elsewhere_are_validation(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").build()).await.unwrap();
    for path in HOSTILE_PATHS {
        assert!(
            repo.find(&Query::new().sort_asc(path))
                .await
                .unwrap_err()
                .is_validation(),
            "{path:?}"
        );
        assert!(
            repo.update_one("a", &Update::new().set(path, 1))
                .await
                .unwrap_err()
                .is_validation(),
            "{path:?}"
        );
        assert!(
            repo.update_many(&Filter::all(), &Update::new().inc(path, 1))
                .await
                .unwrap_err()
                .is_validation()
        );
        assert!(
            repo.count_by(&Filter::all(), path)
                .await
                .unwrap_err()
                .is_validation(),
            "{path:?}"
        );
        assert!(
            repo.aggregate(&Filter::all(), path, Agg::Max)
                .await
                .unwrap_err()
                .is_validation(),
            "{path:?}"
        );
    }
    assert_eq!(repo.get("a").await.unwrap(), Some(item("a").build()));
}

/// Values that look like SQL, CQL or operators are stored and read back as plain text.
pub async fn hostile_values_are_inert_data(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let hostile = [
        "a'); drop table items; --",
        "$where",
        "'; DELETE FROM items WHERE ''='",
        "{\"$gt\": \"\"}",
    ];
    for (i, text) in hostile.iter().enumerate() {
        repo.insert(&item(&format!("h{i}")).name(text).note(text).build())
            .await
            .unwrap();
    }
    repo.insert(&item("plain").build()).await.unwrap();
    for (i, text) in hostile.iter().enumerate() {
        let found = repo
            .find(&Query::filter(Filter::eq("name", *text)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{text}");
        assert_eq!(found[0].id, format!("h{i}"));
        assert_eq!(found[0].note.as_deref(), Some(*text));
    }
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 5);
}

/// A key that looks like an injection is an ordinary key.
pub async fn hostile_key_is_an_ordinary_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let key = "x' OR '1'='1'; DROP TABLE items; --";
    repo.insert(&item(key).build()).await.unwrap();
    repo.insert(&item("other").build()).await.unwrap();
    assert_eq!(repo.get(key).await.unwrap().unwrap().id, key);
    assert!(repo.delete(key).await.unwrap());
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

/// An operator-shaped object as an equality operand is a literal value, not an operator.
pub async fn operator_shaped_operand_is_compared_literally(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").meta(json!({"v": "anything"})).build())
        .await
        .unwrap();
    repo.insert(&item("b").meta(json!({"v": {"op": "gt"}})).build())
        .await
        .unwrap();
    let found = repo
        .find(&Query::filter(Filter::eq("meta.v", json!({"$gt": ""}))))
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(
        repo.count(&Filter::ne("meta.v", json!({"$exists": true})))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        repo.count(&Filter::eq("meta.v", json!({"op": "gt"})))
            .await
            .unwrap(),
        1
    );
}

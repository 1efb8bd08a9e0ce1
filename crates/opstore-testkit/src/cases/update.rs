//! Update operators, update_many counts, upserts, and the validation of updates.

use opstore_domain::{Filter, Repository, StoreError, StoreExt, Timestamp, Update, Value, json};

use crate::Harness;
use crate::fixtures::{Item, item, t0, upsert_item};

fn assert_validation_naming(result: Result<impl std::fmt::Debug, StoreError>, field: &str) {
    match result {
        Err(e @ StoreError::Validation(_)) => assert!(
            e.to_string().contains(field),
            "`{e}` does not name `{field}`"
        ),
        other => panic!("expected a Validation error naming `{field}`, got {other:?}"),
    }
}

async fn repo_with(
    h: &impl Harness,
    docs: &[Item],
) -> (
    std::sync::Arc<dyn opstore_domain::Store>,
    opstore_domain::CollectionRepository<Item>,
) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for d in docs {
        repo.insert(d).await.unwrap();
    }
    (store, repo)
}

/// `set` replaces a field's value.
pub async fn set_replaces_value(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").name("old").build()]).await;
    repo.update_one("a", &Update::new().set("name", "new"))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().name, "new");
}

/// `set` of an absent optional field creates it.
pub async fn set_creates_absent_optional_field(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    repo.update_one("a", &Update::new().set("note", "hi"))
        .await
        .unwrap();
    assert_eq!(
        repo.get("a").await.unwrap().unwrap().note.as_deref(),
        Some("hi")
    );
}

/// `set` on a nested declared field changes only that field.
pub async fn set_nested_field_keeps_siblings(h: &impl Harness) {
    let mut doc = item("a").state("new").build();
    doc.status.since = Some(t0());
    let (_s, repo) = repo_with(h, &[doc]).await;
    repo.update_one("a", &Update::new().set("status.state", "done"))
        .await
        .unwrap();
    let got = repo.get("a").await.unwrap().unwrap();
    assert_eq!(got.status.state, "done");
    assert_eq!(got.status.since, Some(t0()));
}

/// `set` under a JSON field creates the missing parents.
pub async fn set_json_sub_path_creates_parents(h: &impl Harness) {
    let (_s, repo) = repo_with(
        h,
        &[
            item("a").build(),
            item("b").meta(json!({"x": {"keep": 1}})).build(),
        ],
    )
    .await;
    repo.update_one("a", &Update::new().set("meta.x.y", "deep"))
        .await
        .unwrap();
    repo.update_one("b", &Update::new().set("meta.x.y", "deep"))
        .await
        .unwrap();
    assert_eq!(
        repo.get("a").await.unwrap().unwrap().meta,
        Some(json!({"x": {"y": "deep"}}))
    );
    assert_eq!(
        repo.get("b").await.unwrap().unwrap().meta,
        Some(json!({"x": {"keep": 1, "y": "deep"}}))
    );
}

/// `set` of a map entry adds it next to the others.
pub async fn set_map_entry_adds_it(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").label("team", "infra").build()]).await;
    repo.update_one("a", &Update::new().set("labels.zone", "eu"))
        .await
        .unwrap();
    let labels = repo.get("a").await.unwrap().unwrap().labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));
    assert_eq!(labels.get("zone").map(String::as_str), Some("eu"));
}

/// `set` of a timestamp stores it in its portable form.
pub async fn set_timestamp_round_trips(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    let at = Timestamp::from_micros(1_800_000_000_000_001);
    repo.update_one("a", &Update::new().set("status.since", at))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().status.since, Some(at));
}

/// `unset` removes an optional field.
pub async fn unset_removes_optional_field(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").note("x").build()]).await;
    repo.update_one("a", &Update::new().unset("note"))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().note, None);
    assert_eq!(repo.count(&Filter::exists("note")).await.unwrap(), 0);
}

/// `unset` of a JSON sub-path removes only that key.
pub async fn unset_json_sub_path_keeps_siblings(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").meta(json!({"a": 1, "b": 2})).build()]).await;
    repo.update_one("a", &Update::new().unset("meta.a"))
        .await
        .unwrap();
    assert_eq!(
        repo.get("a").await.unwrap().unwrap().meta,
        Some(json!({"b": 2}))
    );
}

/// `inc` adds to an integer and keeps it an integer.
pub async fn inc_adds_to_integer(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(5).build()]).await;
    let after = repo
        .update_one("a", &Update::new().inc("count", -7))
        .await
        .unwrap();
    assert_eq!(after.count, -2);
}

/// `inc` adds a fraction to a float field.
pub async fn inc_adds_to_float(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").price(1.5).build()]).await;
    repo.update_one("a", &Update::new().inc("price", 0.25))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().price, 1.75);
}

/// `inc` of an absent field starts from zero.
pub async fn inc_of_absent_field_starts_from_zero(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    repo.update_one("a", &Update::new().inc("weight", 2.5).inc("meta.hits", 3))
        .await
        .unwrap();
    let got = repo.get("a").await.unwrap().unwrap();
    assert_eq!(got.weight, Some(2.5));
    assert_eq!(got.meta, Some(json!({"hits": 3})));
}

/// `push` appends to a list, keeping duplicates and order.
pub async fn push_appends_to_list(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").tags(&["x"]).build()]).await;
    repo.update_one("a", &Update::new().push("tags", "y"))
        .await
        .unwrap();
    repo.update_one("a", &Update::new().push("tags", "x"))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().tags, ["x", "y", "x"]);
}

/// `push` onto an absent list creates a one-element list.
pub async fn push_onto_absent_field_creates_list(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    repo.update_one(
        "a",
        &Update::new().push("roles", "admin").push("meta.seen", 1),
    )
    .await
    .unwrap();
    let got = repo.get("a").await.unwrap().unwrap();
    assert_eq!(got.roles, ["admin"]);
    assert_eq!(got.meta, Some(json!({"seen": [1]})));
}

/// `push` onto a set ignores a value it already holds.
pub async fn push_onto_set_ignores_present_value(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").roles(&["ops"]).build()]).await;
    repo.update_one("a", &Update::new().push("roles", "dev"))
        .await
        .unwrap();
    repo.update_one("a", &Update::new().push("roles", "ops"))
        .await
        .unwrap();
    let mut roles = repo.get("a").await.unwrap().unwrap().roles;
    roles.sort();
    assert_eq!(roles, ["dev", "ops"]);
}

/// A `push` a set absorbs leaves the document as it was: matched, not modified.
pub async fn push_of_present_set_element_is_not_a_modification(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").roles(&["ops", "dev"]).build()]).await;
    let n = repo
        .update_many(&Filter::all(), &Update::new().push("roles", "ops"))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (1, 0));
    let mut roles = repo.get("a").await.unwrap().unwrap().roles;
    roles.sort();
    assert_eq!(roles, ["dev", "ops"]);
}

/// Several operators in one update all apply.
pub async fn several_operators_apply_together(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(1).note("n").build()]).await;
    let u = Update::new()
        .inc("count", 1)
        .unset("note")
        .push("tags", "t")
        .set("active", false);
    let got = repo.update_one("a", &u).await.unwrap();
    assert_eq!(
        (got.count, got.note, got.tags, got.active),
        (2, None, vec!["t".to_owned()], false)
    );
}

/// `set_on_insert` does nothing to an existing document.
pub async fn set_on_insert_ignored_on_update(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(4).build()]).await;
    let up = repo
        .upsert(
            "a",
            &Update::new().set("note", "n").set_on_insert("count", 99),
        )
        .await
        .unwrap();
    assert!(!up.inserted);
    assert_eq!(up.document.count, 4);
    assert_eq!(up.document.note.as_deref(), Some("n"));
}

/// An upsert of a missing key inserts from the key, `set` and `set_on_insert`.
pub async fn upsert_inserts_missing_document(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[]).await;
    let up = repo.upsert("new", &upsert_item("fresh")).await.unwrap();
    assert!(up.inserted);
    assert_eq!(up.document.id, "new");
    assert_eq!(up.document.name, "fresh");
    assert_eq!(up.document.status.state, "new");
    assert_eq!(repo.get("new").await.unwrap(), Some(up.document));
}

/// An upsert of an existing key updates it and reports `inserted == false`.
pub async fn upsert_updates_existing_document(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(7).build()]).await;
    let up = repo.upsert("a", &upsert_item("renamed")).await.unwrap();
    assert!(!up.inserted);
    assert_eq!(up.document.name, "renamed");
    assert_eq!(up.document.count, 7);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

/// An upsert applies `inc` to the inserted document from zero.
pub async fn upsert_insert_applies_inc_from_zero(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[]).await;
    let u = Update::new()
        .set("name", "n")
        .inc("count", 5)
        .set_on_insert("price", 1.0)
        .set_on_insert("active", true)
        .set_on_insert("tags", json!([]))
        .set_on_insert("status", json!({"state": "new"}))
        .set_on_insert("created_at", t0());
    assert_eq!(repo.upsert("k", &u).await.unwrap().document.count, 5);
    assert_eq!(repo.upsert("k", &u).await.unwrap().document.count, 10);
}

/// An upsert that would insert a document lacking required fields is `Validation`
/// and writes nothing.
pub async fn upsert_insert_missing_required_field_is_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[]).await;
    let err = repo
        .upsert("k", &Update::new().set("name", "only"))
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.get("k").await.unwrap(), None);
}

/// `update_many` counts matched and modified documents separately.
pub async fn update_many_counts_matched_and_modified(h: &impl Harness) {
    let docs: Vec<Item> = (0..6)
        .map(|i| item(&format!("k{i}")).active(i < 2).build())
        .collect();
    let (_s, repo) = repo_with(h, &docs).await;
    let n = repo
        .update_many(&Filter::all(), &Update::new().set("active", true))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (6, 4));
    assert_eq!(repo.count(&Filter::eq("active", true)).await.unwrap(), 6);
}

/// An update whose values already hold matches but modifies nothing.
pub async fn update_with_equal_values_modifies_nothing(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(3).build(), item("b").count(3).build()]).await;
    let n = repo
        .update_many(&Filter::eq("count", 3), &Update::new().set("count", 3))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (2, 0));
}

/// Setting an integer onto an equal float is not a modification (`1 == 1.0`).
pub async fn set_int_onto_equal_float_is_not_a_modification(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").price(2.0).build()]).await;
    let n = repo
        .update_many(&Filter::all(), &Update::new().set("price", 2))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (1, 0));
    assert_eq!(repo.get("a").await.unwrap().unwrap().price, 2.0);
}

/// Unsetting an already absent field is not a modification.
pub async fn unset_of_absent_field_is_not_a_modification(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build(), item("b").note("x").build()]).await;
    let n = repo
        .update_many(&Filter::all(), &Update::new().unset("note"))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (2, 1));
}

/// Removing a field the filter requires changes every match, and the counts
/// say so; a filter on another field still counts its unmodified matches.
pub async fn removing_a_required_field_counts_every_match(h: &impl Harness) {
    let docs = [
        item("a").note("x").count(1).build(),
        item("b").note("y").count(1).build(),
        item("c").note("x").count(2).build(),
        item("d").count(1).build(),
    ];
    let (_s, repo) = repo_with(h, &docs).await;
    let pinned = Filter::any_of([Filter::eq("note", "x"), Filter::eq("note", "y")]);
    let n = repo
        .update_many(
            &pinned.and(Filter::eq("count", 1)),
            &Update::new().set("count", 5).unset("note"),
        )
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (2, 2));
    let n = repo
        .update_many(&Filter::exists("note"), &Update::new().unset("note"))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (1, 1));
    assert_eq!(repo.count(&Filter::exists("note")).await.unwrap(), 0);
    let n = repo
        .update_many(&Filter::eq("count", 5), &Update::new().unset("note"))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (2, 0));
    assert_eq!(repo.count(&Filter::eq("count", 5)).await.unwrap(), 2);
}

/// `update_many` touches only matching documents.
pub async fn update_many_leaves_non_matches_alone(h: &impl Harness) {
    let docs: Vec<Item> = (0..5)
        .map(|i| item(&format!("k{i}")).count(i).build())
        .collect();
    let (_s, repo) = repo_with(h, &docs).await;
    let n = repo
        .update_many(&Filter::gte("count", 3), &Update::new().inc("count", 100))
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (2, 2));
    let mut counts: Vec<i64> = repo
        .find(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|i| i.count)
        .collect();
    counts.sort();
    assert_eq!(counts, [0, 1, 2, 103, 104]);
}

/// `update_many` with no match reports zero and changes nothing.
pub async fn update_many_without_match_reports_zero(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    let n = repo
        .update_many(
            &Filter::eq("name", "nobody"),
            &Update::new().set("count", 1),
        )
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (0, 0));
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 0);
}

/// The key field cannot be changed by an update.
pub async fn key_is_immutable(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("id", "b")).await,
        "id",
    );
    assert!(repo.get("a").await.unwrap().is_some());
    assert_eq!(repo.get("b").await.unwrap(), None);
}

/// An update naming an undeclared field is `Validation` naming it.
pub async fn update_unknown_path_is_validation_naming_it(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("colour", "red"))
            .await,
        "colour",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("status.colour", "red"))
            .await,
        "status.colour",
    );
}

/// Setting a value of the wrong type is `Validation` naming the field, and writes nothing.
pub async fn set_wrong_type_is_validation_naming_field(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").count(1).build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("count", "many"))
            .await,
        "count",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("status.state", 3))
            .await,
        "status.state",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("count", 1.5)).await,
        "count",
    );
    assert_eq!(repo.get("a").await.unwrap().unwrap().count, 1);
}

/// A timestamp that is not in canonical form is `Validation`.
pub async fn set_non_canonical_timestamp_is_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("created_at", "2026-01-01"))
            .await,
        "created_at",
    );
}

/// Setting an object that lacks a required nested field is `Validation` naming it.
pub async fn set_object_missing_required_child_is_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("status", json!({})))
            .await,
        "status.state",
    );
}

/// `inc` on a field that is not a number is `Validation` naming it.
pub async fn inc_on_non_number_is_validation_naming_field(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().inc("name", 1)).await,
        "name",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().inc("count", "1")).await,
        "count",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().inc("count", 0.5)).await,
        "count",
    );
}

/// `push` onto a non-list, or of a wrong element type, is `Validation` naming the field.
pub async fn push_wrong_type_is_validation_naming_field(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().push("name", "x")).await,
        "name",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().push("tags", 1)).await,
        "tags",
    );
}

/// Unsetting or nulling a required field is `Validation`.
pub async fn unset_required_field_is_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    assert_validation_naming(
        repo.update_one("a", &Update::new().unset("name")).await,
        "name",
    );
    assert_validation_naming(
        repo.update_one("a", &Update::new().set("count", Value::Null))
            .await,
        "count",
    );
    assert_eq!(repo.get("a").await.unwrap().unwrap().name, "name-a");
}

/// Setting an optional field to null removes it.
pub async fn set_null_on_optional_field_clears_it(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").note("x").build()]).await;
    repo.update_one("a", &Update::new().set("note", Value::Null))
        .await
        .unwrap();
    assert_eq!(repo.get("a").await.unwrap().unwrap().note, None);
    assert_eq!(repo.count(&Filter::missing("note")).await.unwrap(), 1);
}

/// An update without operators is `Validation`.
pub async fn empty_update_is_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    let err = repo.update_one("a", &Update::new()).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
}

/// Two operators on overlapping paths are `Validation`.
pub async fn overlapping_update_paths_are_validation(h: &impl Harness) {
    let (_s, repo) = repo_with(h, &[item("a").build()]).await;
    let u = Update::new()
        .set("status", json!({"state": "x"}))
        .set("status.state", "y");
    assert_validation_naming(repo.update_one("a", &u).await, "status.state");
    let u = Update::new().inc("count", 1).set("count", 5);
    assert_validation_naming(repo.update_one("a", &u).await, "count");
}

/// A failing `update_many` changes no document.
pub async fn invalid_update_many_changes_nothing(h: &impl Harness) {
    let docs: Vec<Item> = (0..3).map(|i| item(&format!("k{i}")).build()).collect();
    let (_s, repo) = repo_with(h, &docs).await;
    let err = repo
        .update_many(
            &Filter::all(),
            &Update::new().set("note", "x").inc("name", 1),
        )
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.count(&Filter::exists("note")).await.unwrap(), 0);
}

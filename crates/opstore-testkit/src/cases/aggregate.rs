//! Portable aggregates: count-by-field and min / max / sum under a filter.

use opstore_domain::{Agg, Filter, Repository, StoreExt, Value, json};

use crate::Harness;
use crate::fixtures::{Item, item};

type Repo = opstore_domain::CollectionRepository<Item>;

/// Six items: states new/new/done/done/done/failed, counts 1..=6, weights on some.
async fn seeded(h: &impl Harness) -> (std::sync::Arc<dyn opstore_domain::Store>, Repo) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let states = ["new", "new", "done", "done", "done", "failed"];
    for (i, state) in states.iter().enumerate() {
        let b = item(&format!("a{i}"))
            .state(state)
            .count(i as i64 + 1)
            .price(0.5 * (i as f64 + 1.0));
        let b = if i % 2 == 0 {
            b.weight(i as f64).note(&format!("n{i}"))
        } else {
            b
        };
        repo.insert(&b.at(i as i64 * 10).build()).await.unwrap();
    }
    (store, repo)
}

/// `count_by` counts documents per distinct value, ordered by value.
pub async fn count_by_groups_and_orders_by_value(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let groups = repo.count_by(&Filter::all(), "status.state").await.unwrap();
    assert_eq!(
        groups,
        vec![(json!("done"), 3), (json!("failed"), 1), (json!("new"), 2)]
    );
}

/// `count_by` counts only documents matching the filter.
pub async fn count_by_respects_filter(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let groups = repo
        .count_by(&Filter::lte("count", 3), "status.state")
        .await
        .unwrap();
    assert_eq!(groups, vec![(json!("done"), 1), (json!("new"), 2)]);
}

/// `count_by` puts documents without the field in a null group, first.
pub async fn count_by_groups_absent_values_as_null(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let groups = repo
        .count_by(&Filter::lte("count", 3), "note")
        .await
        .unwrap();
    assert_eq!(
        groups,
        vec![(Value::Null, 1), (json!("n0"), 1), (json!("n2"), 1)]
    );
}

/// `count_by` over no matches is empty.
pub async fn count_by_of_no_matches_is_empty(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert!(
        repo.count_by(&Filter::gt("count", 100), "status.state")
            .await
            .unwrap()
            .is_empty()
    );
}

/// `count_by` on a boolean field groups false before true.
pub async fn count_by_on_bool(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, active) in [("a", true), ("b", false), ("c", true)] {
        repo.insert(&item(id).active(active).build()).await.unwrap();
    }
    let groups = repo.count_by(&Filter::all(), "active").await.unwrap();
    assert_eq!(groups, vec![(json!(false), 1), (json!(true), 2)]);
}

/// `count_by` on a list field is `Validation`.
pub async fn count_by_on_list_is_validation(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let err = repo.count_by(&Filter::all(), "tags").await.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("tags"),
        "{err}"
    );
}

/// `min` and `max` of an integer field under a filter.
pub async fn min_and_max_of_integers(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::eq("status.state", "done");
    assert_eq!(
        repo.aggregate(&f, "count", Agg::Min)
            .await
            .unwrap()
            .as_i64(),
        Some(3)
    );
    assert_eq!(
        repo.aggregate(&f, "count", Agg::Max)
            .await
            .unwrap()
            .as_i64(),
        Some(5)
    );
}

/// The sum of an integer field is an integer.
pub async fn sum_of_integers_is_an_integer(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let sum = repo
        .aggregate(&Filter::all(), "count", Agg::Sum)
        .await
        .unwrap();
    assert!(
        sum.is_i64(),
        "sum of an int field should be an int, got {sum}"
    );
    assert_eq!(sum.as_i64(), Some(21));
}

/// The sum of a float field adds fractions.
pub async fn sum_of_floats(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let sum = repo
        .aggregate(&Filter::lte("count", 3), "price", Agg::Sum)
        .await
        .unwrap();
    assert_eq!(sum.as_f64(), Some(3.0));
}

/// Sum skips documents without the field.
pub async fn sum_skips_absent_values(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    // Weights 0, 2, 4 on a0, a2, a4; the others have none.
    assert_eq!(
        repo.aggregate(&Filter::all(), "weight", Agg::Sum)
            .await
            .unwrap()
            .as_f64(),
        Some(6.0)
    );
}

/// Min and max skip documents without the field.
pub async fn min_and_max_skip_absent_values(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        repo.aggregate(&Filter::all(), "weight", Agg::Min)
            .await
            .unwrap()
            .as_f64(),
        Some(0.0)
    );
    assert_eq!(
        repo.aggregate(&Filter::all(), "note", Agg::Max)
            .await
            .unwrap(),
        json!("n4")
    );
}

/// The sum over no matches is 0.
pub async fn sum_of_no_matches_is_zero(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let sum = repo
        .aggregate(&Filter::gt("count", 100), "count", Agg::Sum)
        .await
        .unwrap();
    assert_eq!(sum.as_f64(), Some(0.0), "{sum}");
}

/// Min and max over no matches are null.
pub async fn min_and_max_of_no_matches_are_null(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let none = Filter::gt("count", 100);
    assert_eq!(
        repo.aggregate(&none, "count", Agg::Min).await.unwrap(),
        Value::Null
    );
    assert_eq!(
        repo.aggregate(&none, "price", Agg::Max).await.unwrap(),
        Value::Null
    );
}

/// Min and max of strings follow code-point order.
pub async fn min_and_max_of_strings(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        repo.aggregate(&Filter::all(), "status.state", Agg::Min)
            .await
            .unwrap(),
        json!("done")
    );
    assert_eq!(
        repo.aggregate(&Filter::all(), "status.state", Agg::Max)
            .await
            .unwrap(),
        json!("new")
    );
}

/// Min and max of timestamps are the earliest and latest instants.
pub async fn min_and_max_of_timestamps(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let earliest = item("x").at(0).build().created_at;
    let latest = item("x").at(50).build().created_at;
    assert_eq!(
        repo.aggregate(&Filter::all(), "created_at", Agg::Min)
            .await
            .unwrap(),
        Value::from(earliest)
    );
    assert_eq!(
        repo.aggregate(&Filter::all(), "created_at", Agg::Max)
            .await
            .unwrap(),
        Value::from(latest)
    );
}

/// Sum of a non-numeric field is `Validation` naming it.
pub async fn sum_of_non_number_is_validation(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let err = repo
        .aggregate(&Filter::all(), "name", Agg::Sum)
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("name"),
        "{err}"
    );
}

/// Min of an unsortable field is `Validation` naming it.
pub async fn min_of_unsortable_field_is_validation(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let err = repo
        .aggregate(&Filter::all(), "meta", Agg::Min)
        .await
        .unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("meta"),
        "{err}"
    );
}

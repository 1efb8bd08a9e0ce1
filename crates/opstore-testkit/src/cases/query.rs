//! Filters: every operator, null versus absent, numeric equality across int and
//! float, boolean combinators, nested and JSON sub-paths.

use opstore_domain::{Filter, Query, Repository, StoreExt, Value, json};

use crate::Harness;
use crate::fixtures::{Item, item, keys, strs};

type Repo = opstore_domain::CollectionRepository<Item>;

/// Five items with counts 1..=5, a note on even ones, states alternating.
async fn seeded(h: &impl Harness) -> (std::sync::Arc<dyn opstore_domain::Store>, Repo) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (1..=5)
        .map(|i| {
            let b = item(&format!("i{i}"))
                .count(i)
                .price(i as f64 * 1.5)
                .active(i % 2 == 1)
                .state(if i <= 2 { "new" } else { "done" });
            let b = if i % 2 == 0 {
                b.note(&format!("note{i}"))
            } else {
                b
            };
            b.build()
        })
        .collect();
    repo.insert_many(&docs).await.unwrap();
    (store, repo)
}

async fn find(repo: &Repo, filter: Filter) -> Vec<String> {
    keys(&repo.find(&Query::filter(filter)).await.unwrap())
}

/// `eq` matches exactly the equal documents.
pub async fn eq_matches_equal_values(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, Filter::eq("count", 3)).await, strs(&["i3"]));
    assert_eq!(find(&repo, Filter::eq("count", 30)).await, strs(&[]));
}

/// `ne` matches every document that differs.
pub async fn ne_matches_different_values(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::ne("count", 3)).await,
        strs(&["i1", "i2", "i4", "i5"])
    );
}

/// `gt` excludes the bound.
pub async fn gt_excludes_bound(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::gt("count", 3)).await,
        strs(&["i4", "i5"])
    );
}

/// `gte` includes the bound.
pub async fn gte_includes_bound(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::gte("count", 3)).await,
        strs(&["i3", "i4", "i5"])
    );
}

/// `lt` excludes the bound.
pub async fn lt_excludes_bound(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::lt("count", 3)).await,
        strs(&["i1", "i2"])
    );
}

/// `lte` includes the bound.
pub async fn lte_includes_bound(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::lte("count", 3)).await,
        strs(&["i1", "i2", "i3"])
    );
}

/// Range bounds on a float field compare by value.
pub async fn range_on_float_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    // Prices are 1.5, 3.0, 4.5, 6.0, 7.5.
    let f = Filter::gt("price", 3).and(Filter::lte("price", 6.0));
    assert_eq!(find(&repo, f).await, strs(&["i3", "i4"]));
}

/// `in` matches any listed value.
pub async fn in_matches_any_listed_value(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::is_in("count", [1, 4, 99])).await,
        strs(&["i1", "i4"])
    );
}

/// `in` with an empty list matches nothing.
pub async fn in_empty_list_matches_nothing(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::is_in("count", Vec::<Value>::new())).await,
        strs(&[])
    );
}

/// `nin` matches documents whose value is not listed.
pub async fn nin_matches_unlisted_values(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::not_in("count", [1, 4])).await,
        strs(&["i2", "i3", "i5"])
    );
}

/// `nin` with an empty list matches everything.
pub async fn nin_empty_list_matches_everything(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::not_in("count", Vec::<Value>::new()))
            .await
            .len(),
        5
    );
}

/// Equality on booleans.
pub async fn eq_on_bool(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::eq("active", false)).await,
        strs(&["i2", "i4"])
    );
}

/// An integer operand equals the same number stored as a float, and the other way round.
pub async fn int_and_float_operands_compare_by_value(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    // i2 has price 3.0 (a float) and count 2 (an int).
    assert_eq!(find(&repo, Filter::eq("price", 3)).await, strs(&["i2"]));
    assert_eq!(find(&repo, Filter::eq("count", 2.0)).await, strs(&["i2"]));
    assert_eq!(
        find(&repo, Filter::is_in("price", [json!(3), json!(7.5)])).await,
        strs(&["i2", "i5"])
    );
}

/// A fractional operand never equals an integer field.
pub async fn fractional_operand_matches_no_integer(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, Filter::eq("count", 2.5)).await, strs(&[]));
    assert_eq!(find(&repo, Filter::gt("count", 4.5)).await, strs(&["i5"]));
}

/// Equality with null matches documents where the field is absent.
pub async fn eq_null_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::eq("note", Value::Null)).await,
        strs(&["i1", "i3", "i5"])
    );
}

/// `ne` matches documents where the field is absent.
pub async fn ne_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::ne("note", "note2")).await,
        strs(&["i1", "i3", "i4", "i5"])
    );
}

/// `ne` null matches only documents where the field is present.
pub async fn ne_null_matches_present_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::ne("note", Value::Null)).await,
        strs(&["i2", "i4"])
    );
}

/// `nin` matches documents where the field is absent.
pub async fn nin_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::not_in("note", ["note4"])).await,
        strs(&["i1", "i2", "i3", "i5"])
    );
}

/// `in` listing null matches documents where the field is absent.
pub async fn in_with_null_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::is_in("note", [Value::Null, json!("note4")]);
    assert_eq!(find(&repo, f).await, strs(&["i1", "i3", "i4", "i5"]));
}

/// Range comparisons never match an absent field.
pub async fn range_never_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::gt("note", "")).await,
        strs(&["i2", "i4"])
    );
    assert_eq!(
        find(&repo, Filter::lt("note", "zzzz")).await,
        strs(&["i2", "i4"])
    );
}

/// `exists` matches documents where the field is present.
pub async fn exists_matches_present_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::exists("note")).await,
        strs(&["i2", "i4"])
    );
}

/// `missing` matches documents where the field is absent.
pub async fn missing_matches_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::missing("note")).await,
        strs(&["i1", "i3", "i5"])
    );
}

/// A JSON null is treated like an absent field by `eq`, `exists` and `missing`.
pub async fn json_null_is_treated_as_absent(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("null").meta(json!({"a": null})).build())
        .await
        .unwrap();
    repo.insert(&item("absent").meta(json!({})).build())
        .await
        .unwrap();
    repo.insert(&item("set").meta(json!({"a": 1})).build())
        .await
        .unwrap();
    assert_eq!(
        find(&repo, Filter::eq("meta.a", Value::Null)).await,
        strs(&["absent", "null"])
    );
    assert_eq!(find(&repo, Filter::exists("meta.a")).await, strs(&["set"]));
    assert_eq!(
        find(&repo, Filter::missing("meta.a")).await,
        strs(&["absent", "null"])
    );
}

/// An empty `and` matches everything.
pub async fn empty_and_matches_everything(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, Filter::all_of([])).await.len(), 5);
}

/// An empty `or` matches nothing.
pub async fn empty_or_matches_nothing(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(find(&repo, Filter::any_of([])).await, strs(&[]));
}

/// `and` requires every sub-filter.
pub async fn and_requires_every_subfilter(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::eq("active", true).and(Filter::gt("count", 1));
    assert_eq!(find(&repo, f).await, strs(&["i3", "i5"]));
}

/// `or` accepts any sub-filter.
pub async fn or_accepts_any_subfilter(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::eq("count", 1)
        .or(Filter::eq("status.state", "done").and(Filter::eq("active", false)));
    assert_eq!(find(&repo, f).await, strs(&["i1", "i4"]));
}

/// `not` inverts its sub-filter.
pub async fn not_inverts_subfilter(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::is_in("count", [1, 2, 3]).not();
    assert_eq!(find(&repo, f).await, strs(&["i4", "i5"]));
}

/// `not` of an equality includes documents where the field is absent.
pub async fn not_eq_includes_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::eq("note", "note2").not();
    assert_eq!(find(&repo, f).await, strs(&["i1", "i3", "i4", "i5"]));
}

/// `not` of a range includes documents where the field is absent.
pub async fn not_range_includes_absent_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::gt("note", "note2").not();
    assert_eq!(find(&repo, f).await, strs(&["i1", "i2", "i3", "i5"]));
}

/// Deeply combined filters evaluate like the reference semantics.
pub async fn nested_combinators_evaluate_correctly(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let f = Filter::any_of([
        Filter::all_of([Filter::eq("status.state", "new"), Filter::exists("note")]),
        Filter::all_of([Filter::gte("count", 5), Filter::eq("active", true)])
            .not()
            .and(Filter::eq("count", 3)),
    ]);
    assert_eq!(find(&repo, f).await, strs(&["i2", "i3"]));
}

/// Filters address nested declared fields by dotted path.
pub async fn filter_on_nested_field(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    assert_eq!(
        find(&repo, Filter::eq("status.state", "new")).await,
        strs(&["i1", "i2"])
    );
}

/// Filters reach into free-form JSON by sub-path.
pub async fn filter_on_json_sub_path(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(
        &item("a")
            .meta(json!({"host": {"rack": "r1", "slot": 4}}))
            .build(),
    )
    .await
    .unwrap();
    repo.insert(
        &item("b")
            .meta(json!({"host": {"rack": "r2", "slot": 7}}))
            .build(),
    )
    .await
    .unwrap();
    repo.insert(&item("c").build()).await.unwrap();
    assert_eq!(
        find(&repo, Filter::eq("meta.host.rack", "r2")).await,
        strs(&["b"])
    );
    assert_eq!(
        find(&repo, Filter::gt("meta.host.slot", 5)).await,
        strs(&["b"])
    );
    assert_eq!(
        find(&repo, Filter::exists("meta.host")).await,
        strs(&["a", "b"])
    );
}

/// Equality on a JSON object compares the whole structure.
pub async fn eq_on_json_object_compares_structurally(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").meta(json!({"x": 1, "y": [1, 2]})).build())
        .await
        .unwrap();
    repo.insert(&item("b").meta(json!({"x": 1})).build())
        .await
        .unwrap();
    assert_eq!(
        find(&repo, Filter::eq("meta", json!({"y": [1, 2], "x": 1}))).await,
        strs(&["a"])
    );
}

/// Equality on a list compares the whole list.
pub async fn eq_on_list_compares_whole_list(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").tags(&["x", "y"]).build())
        .await
        .unwrap();
    repo.insert(&item("b").tags(&["x"]).build()).await.unwrap();
    assert_eq!(
        find(&repo, Filter::eq("tags", json!(["x", "y"]))).await,
        strs(&["a"])
    );
    assert_eq!(
        find(&repo, Filter::eq("tags", json!(["x"]))).await,
        strs(&["b"])
    );
}

/// Filters address map entries by key.
pub async fn filter_on_map_entry(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").label("team", "infra").build())
        .await
        .unwrap();
    repo.insert(&item("b").label("team", "web").label("tier", "1").build())
        .await
        .unwrap();
    repo.insert(&item("c").build()).await.unwrap();
    assert_eq!(
        find(&repo, Filter::eq("labels.team", "web")).await,
        strs(&["b"])
    );
    assert_eq!(
        find(&repo, Filter::exists("labels.tier")).await,
        strs(&["b"])
    );
    assert_eq!(
        find(&repo, Filter::missing("labels.team")).await,
        strs(&["c"])
    );
}

/// Strings compare by Unicode code point: upper case sorts before lower case.
pub async fn strings_compare_by_code_point(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, name) in [("1", "a"), ("2", "B"), ("3", "b"), ("4", "Z"), ("5", "é")] {
        repo.insert(&item(id).name(name).build()).await.unwrap();
    }
    assert_eq!(
        find(&repo, Filter::gt("name", "Z")).await,
        strs(&["1", "3", "5"])
    );
    assert_eq!(
        find(&repo, Filter::lt("name", "a")).await,
        strs(&["2", "4"])
    );
}

/// Timestamps filter in time order.
pub async fn timestamp_range_filters_in_time_order(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, secs) in [("a", -86_400), ("b", 0), ("c", 59), ("d", 86_400 * 400)] {
        repo.insert(&item(id).at(secs).build()).await.unwrap();
    }
    let from = item("x").at(0).build().created_at;
    let to = item("x").at(3600).build().created_at;
    let f = Filter::gte("created_at", from).and(Filter::lt("created_at", to));
    assert_eq!(find(&repo, f).await, strs(&["b", "c"]));
}

/// `find_one` returns the first match in default order.
pub async fn find_one_returns_first_match(h: &impl Harness) {
    let (_s, repo) = seeded(h).await;
    let found = repo
        .find_one(&Filter::gt("count", 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "i3");
}

/// Filters on a field without an index work, or are refused as `Unsupported`.
pub async fn filter_on_unindexed_field_works_or_is_unsupported(h: &impl Harness) {
    let (store, repo) = seeded(h).await;
    let result = repo.find(&Query::filter(Filter::eq("price", 4.5))).await;
    if store.capabilities().filter_any_field {
        assert_eq!(keys(&result.unwrap()), strs(&["i3"]));
    } else {
        crate::fixtures::assert_unsupported(result, "filters on unindexed fields");
    }
}

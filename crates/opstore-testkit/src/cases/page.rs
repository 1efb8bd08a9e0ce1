//! Pages, totals, skip and limit, and ordering: stability with ties, multi-field
//! sort, default sort, and where absent values go.

use opstore_domain::{Filter, Query, Repository, StoreExt};

use crate::Harness;
use crate::fixtures::{Item, Ticket, item, keys, store_now, strs, ticket, ticket_keys};

type Repo = opstore_domain::CollectionRepository<Item>;

/// Twelve items `p00`..`p11` with counts 0..=11.
async fn twelve(h: &impl Harness) -> (std::sync::Arc<dyn opstore_domain::Store>, Repo) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..12)
        .map(|i| item(&format!("p{i:02}")).count(i).build())
        .collect();
    repo.insert_many(&docs).await.unwrap();
    (store, repo)
}

/// A page carries the total number of matches, not of the page.
pub async fn page_total_counts_all_matches(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo
        .find_page(
            &Query::filter(Filter::gte("count", 2))
                .sort_asc("count")
                .limit(3),
        )
        .await
        .unwrap();
    assert_eq!(keys(&page.items), strs(&["p02", "p03", "p04"]));
    assert_eq!(page.total, 10);
}

/// Skip and limit select a window of the sorted matches.
pub async fn skip_and_limit_select_a_window(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo
        .find_page(&Query::new().sort_asc("count").skip(4).limit(3))
        .await
        .unwrap();
    assert_eq!(keys(&page.items), strs(&["p04", "p05", "p06"]));
    assert_eq!(page.total, 12);
}

/// Limit 0 means every match.
pub async fn limit_zero_returns_all(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo.find_page(&Query::new().limit(0)).await.unwrap();
    assert_eq!(page.items.len(), 12);
    assert_eq!(page.total, 12);
}

/// Limit 0 with a skip returns everything after the skip.
pub async fn limit_zero_with_skip_returns_the_rest(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let found = repo
        .find(&Query::new().sort_asc("count").skip(9))
        .await
        .unwrap();
    assert_eq!(keys(&found), strs(&["p09", "p10", "p11"]));
}

/// An offset past the end gives an empty page with the right total.
pub async fn offset_past_end_returns_empty_page_with_total(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo
        .find_page(&Query::new().skip(50).limit(5))
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.total, 12);
}

/// The last page is short when the matches run out.
pub async fn last_page_is_partial(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo
        .find_page(&Query::new().sort_asc("count").skip(10).limit(5))
        .await
        .unwrap();
    assert_eq!(keys(&page.items), strs(&["p10", "p11"]));
    assert_eq!(page.total, 12);
}

/// A page of an empty result has total 0.
pub async fn page_of_no_matches_has_zero_total(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let page = repo
        .find_page(&Query::filter(Filter::gt("count", 100)).limit(5))
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.total, 0);
}

/// Walking pages visits every match exactly once, in order.
pub async fn paging_visits_every_match_once(h: &impl Harness) {
    let (_s, repo) = twelve(h).await;
    let mut seen = Vec::new();
    for skip in (0..12).step_by(5) {
        let page = repo
            .find_page(&Query::new().sort_desc("count").skip(skip).limit(5))
            .await
            .unwrap();
        assert_eq!(page.total, 12);
        seen.extend(keys(&page.items));
    }
    let expected: Vec<String> = (0..12).rev().map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
}

/// Without a sort and without a default sort, results come in key order.
pub async fn no_sort_orders_by_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for id in ["m", "b", "z", "a"] {
        repo.insert(&item(id).build()).await.unwrap();
    }
    assert_eq!(
        keys(&repo.find(&Query::new()).await.unwrap()),
        strs(&["a", "b", "m", "z"])
    );
}

/// Ties on the sort field are broken by key ascending, so pages are stable.
pub async fn sort_ties_break_by_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, count) in [("e", 1), ("b", 2), ("d", 1), ("a", 2), ("c", 1)] {
        repo.insert(&item(id).count(count).build()).await.unwrap();
    }
    let found = repo.find(&Query::new().sort_asc("count")).await.unwrap();
    assert_eq!(keys(&found), strs(&["c", "d", "e", "a", "b"]));
}

/// A descending sort still breaks ties by key ascending.
pub async fn desc_sort_breaks_ties_by_key_ascending(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, count) in [("e", 1), ("b", 2), ("d", 1), ("a", 2), ("c", 1)] {
        repo.insert(&item(id).count(count).build()).await.unwrap();
    }
    let found = repo.find(&Query::new().sort_desc("count")).await.unwrap();
    assert_eq!(keys(&found), strs(&["a", "b", "c", "d", "e"]));
}

/// Pages over tied values neither repeat nor skip documents.
pub async fn pages_over_ties_are_stable(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..20)
        .map(|i| item(&format!("t{:02}", (i * 7) % 20)).count(i % 2).build())
        .collect();
    repo.insert_many(&docs).await.unwrap();
    let mut seen = Vec::new();
    for skip in [0, 6, 12, 18] {
        seen.extend(keys(
            &repo
                .find(&Query::new().sort_asc("count").skip(skip).limit(6))
                .await
                .unwrap(),
        ));
    }
    let mut expected = repo.find(&Query::new().sort_asc("count")).await.unwrap();
    assert_eq!(seen, keys(&expected));
    expected.sort_by(|a, b| (a.count, &a.id).cmp(&(b.count, &b.id)));
    assert_eq!(seen, keys(&expected));
}

/// Later sort keys order documents that tie on earlier ones.
pub async fn multi_field_sort(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, state, count) in [
        ("a", "x", 1),
        ("b", "y", 5),
        ("c", "x", 3),
        ("d", "y", 2),
        ("e", "x", 3),
    ] {
        repo.insert(&item(id).state(state).count(count).build())
            .await
            .unwrap();
    }
    let q = Query::new().sort_asc("status.state").sort_desc("count");
    assert_eq!(
        keys(&repo.find(&q).await.unwrap()),
        strs(&["c", "e", "a", "b", "d"])
    );
}

/// Sorting on a nested field orders by it.
pub async fn sort_on_nested_field(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, state) in [("a", "c"), ("b", "a"), ("c", "b")] {
        repo.insert(&item(id).state(state).build()).await.unwrap();
    }
    assert_eq!(
        keys(
            &repo
                .find(&Query::new().sort_desc("status.state"))
                .await
                .unwrap()
        ),
        strs(&["a", "c", "b"])
    );
}

/// Ascending order puts documents without the field first.
pub async fn asc_sort_puts_absent_first(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").weight(2.0).build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    repo.insert(&item("c").weight(-1.0).build()).await.unwrap();
    assert_eq!(
        keys(&repo.find(&Query::new().sort_asc("weight")).await.unwrap()),
        strs(&["b", "c", "a"])
    );
}

/// Descending order puts documents without the field last.
pub async fn desc_sort_puts_absent_last(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").weight(2.0).build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    repo.insert(&item("c").weight(-1.0).build()).await.unwrap();
    repo.insert(&item("d").build()).await.unwrap();
    assert_eq!(
        keys(&repo.find(&Query::new().sort_desc("weight")).await.unwrap()),
        strs(&["a", "c", "b", "d"])
    );
}

/// Strings sort by code point.
pub async fn string_sort_is_by_code_point(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, name) in [("1", "b"), ("2", "B"), ("3", "a"), ("4", "_"), ("5", "Ä")] {
        repo.insert(&item(id).name(name).build()).await.unwrap();
    }
    let names: Vec<String> = repo
        .find(&Query::new().sort_asc("name"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, strs(&["B", "_", "a", "b", "Ä"]));
}

/// Integers and floats in a float field sort by value.
pub async fn numeric_sort_is_by_value(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, price) in [("a", 10.0), ("b", 9.5), ("c", -3.0), ("d", 100.25)] {
        repo.insert(&item(id).price(price).build()).await.unwrap();
    }
    assert_eq!(
        keys(&repo.find(&Query::new().sort_asc("price")).await.unwrap()),
        strs(&["c", "b", "a", "d"])
    );
}

/// A query without a sort uses the schema's default sort, then the key.
pub async fn default_sort_applies_without_explicit_sort(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let now = store_now(&*store).await;
    for (id, prio) in [("a", 1), ("b", 5), ("c", 3), ("d", 5)] {
        repo.insert(&ticket(id, "o", prio, now)).await.unwrap();
    }
    assert_eq!(
        ticket_keys(&repo.find(&Query::new()).await.unwrap()),
        strs(&["b", "d", "c", "a"])
    );
}

/// An explicit sort comes first, then the default sort, then the key.
pub async fn explicit_sort_falls_back_to_default_sort_then_key(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let now = store_now(&*store).await;
    for (id, owner, prio) in [
        ("a", "x", 1),
        ("b", "y", 5),
        ("c", "x", 3),
        ("d", "x", 3),
        ("e", "y", 9),
    ] {
        repo.insert(&ticket(id, owner, prio, now)).await.unwrap();
    }
    let found = repo.find(&Query::new().sort_asc("owner")).await.unwrap();
    assert_eq!(ticket_keys(&found), strs(&["c", "d", "a", "e", "b"]));
}

/// `find_page` honours the default sort too.
pub async fn find_page_uses_default_sort(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let now = store_now(&*store).await;
    for (id, prio) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        repo.insert(&ticket(id, "o", prio, now)).await.unwrap();
    }
    let page = repo
        .find_page(&Query::new().skip(1).limit(2))
        .await
        .unwrap();
    assert_eq!(ticket_keys(&page.items), strs(&["c", "b"]));
    assert_eq!(page.total, 4);
}

/// Sorting on an unindexed field works, or is refused as `Unsupported`.
pub async fn sort_on_unindexed_field_works_or_is_unsupported(h: &impl Harness) {
    let (store, repo) = twelve(h).await;
    let result = repo
        .find(&Query::new().sort_desc("price").sort_desc("count").limit(2))
        .await;
    if store.capabilities().sort_any_field {
        assert_eq!(keys(&result.unwrap()), strs(&["p11", "p10"]));
    } else {
        crate::fixtures::assert_unsupported(result, "sort on any field");
    }
}

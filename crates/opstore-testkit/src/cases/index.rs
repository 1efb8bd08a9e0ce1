//! Lookups through declared indexes stay exact while documents change: updates,
//! replaces, deletes and rollbacks keep indexed and unique fields consistent.

use std::time::Duration;

use opstore_domain::{
    Filter, Query, Repository, StoreError, StoreExt, TxExt, TxOptions, Update, Value, json,
    run_transaction,
};

use crate::Harness;
use crate::fixtures::{
    Item, Ticket, item, keys, lacks_transactions, store_now, strs, ticket, ticket_keys,
};

/// After an update of an indexed field, lookups find the new value and not the old.
pub async fn indexed_lookup_follows_updates(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").name("before").build())
        .await
        .unwrap();
    repo.update_one("a", &Update::new().set("name", "after"))
        .await
        .unwrap();
    assert_eq!(repo.count(&Filter::eq("name", "before")).await.unwrap(), 0);
    assert_eq!(
        repo.get_by_field("name", json!("after"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "a"
    );
}

/// After a replace or delete, lookups on indexed fields reflect it.
pub async fn indexed_lookup_follows_replace_and_delete(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").state("x").build()).await.unwrap();
    repo.insert(&item("b").state("x").build()).await.unwrap();
    repo.replace(&item("a").state("y").build()).await.unwrap();
    repo.delete("b").await.unwrap();
    let find = |state: &'static str| {
        let repo = repo.clone();
        async move {
            keys(
                &repo
                    .find(&Query::filter(Filter::eq("status.state", state)))
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(find("x").await, strs(&[]));
    assert_eq!(find("y").await, strs(&["a"]));
}

/// `update_many` that moves documents out of the filtered index value moves all of them.
pub async fn update_many_moving_indexed_value_moves_all(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..10)
        .map(|i| item(&format!("k{i}")).state("new").build())
        .collect();
    repo.insert_many(&docs).await.unwrap();
    let n = repo
        .update_many(
            &Filter::eq("status.state", "new"),
            &Update::new().set("status.state", "done"),
        )
        .await
        .unwrap();
    assert_eq!((n.matched, n.modified), (10, 10));
    assert_eq!(
        repo.count(&Filter::eq("status.state", "new"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        repo.count(&Filter::eq("status.state", "done"))
            .await
            .unwrap(),
        10
    );
}

/// Equality on an indexed integer field matches an equal float operand (`5 == 5.0`).
pub async fn indexed_eq_compares_numbers_by_value(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let now = store_now(&*store).await;
    repo.insert(&ticket("a", "o", 5, now)).await.unwrap();
    repo.insert(&ticket("b", "o", 6, now)).await.unwrap();
    let found = repo
        .find(&Query::filter(Filter::eq("priority", 5.0)))
        .await
        .unwrap();
    assert_eq!(ticket_keys(&found), strs(&["a"]));
    assert_eq!(
        repo.count(&Filter::is_in("priority", [json!(6.0), json!(7)]))
            .await
            .unwrap(),
        1
    );
}

/// Equality with null on an indexed optional field matches documents without it.
pub async fn indexed_eq_null_matches_absent(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").sku("S-1").build()).await.unwrap();
    repo.insert(&item("b").build()).await.unwrap();
    repo.insert(&item("c").build()).await.unwrap();
    let found = repo
        .find(&Query::filter(Filter::eq("sku", Value::Null)))
        .await
        .unwrap();
    assert_eq!(keys(&found), strs(&["b", "c"]));
    let found = repo
        .find(&Query::filter(Filter::is_in(
            "sku",
            [Value::Null, json!("S-1")],
        )))
        .await
        .unwrap();
    assert_eq!(keys(&found), strs(&["a", "b", "c"]));
}

/// An indexed equality combined with other predicates applies all of them.
pub async fn indexed_eq_with_other_predicates(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for i in 0..8 {
        repo.insert(
            &item(&format!("k{i}"))
                .name(if i < 4 { "n" } else { "m" })
                .count(i)
                .build(),
        )
        .await
        .unwrap();
    }
    let f = Filter::eq("name", "n")
        .and(Filter::gte("count", 2))
        .and(Filter::ne("count", 3));
    assert_eq!(
        keys(&repo.find(&Query::filter(f)).await.unwrap()),
        strs(&["k2"])
    );
    let f = Filter::eq("name", "n").or(Filter::eq("count", 7));
    assert_eq!(
        keys(&repo.find(&Query::filter(f)).await.unwrap()),
        strs(&["k0", "k1", "k2", "k3", "k7"])
    );
}

/// A rolled-back transaction leaves indexed lookups and unique values as they were.
pub async fn rollback_restores_indexes_and_unique_values(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").name("orig").sku("S-A").build())
        .await
        .unwrap();
    let result: opstore_domain::Result<()> =
        run_transaction(&*store, TxOptions::default(), |tx| async move {
            let items = tx.repository::<Item>()?;
            items
                .update_one("a", &Update::new().set("name", "changed").unset("sku"))
                .await?;
            items.insert(&item("b").sku("S-B").build()).await?;
            Err(StoreError::Conflict("abort".into()))
        })
        .await;
    assert!(result.is_err());
    assert_eq!(
        repo.get_by_field("name", json!("orig"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "a"
    );
    assert_eq!(repo.count(&Filter::eq("name", "changed")).await.unwrap(), 0);
    assert!(
        repo.insert(&item("c").sku("S-A").build())
            .await
            .unwrap_err()
            .is_conflict()
    );
    repo.insert(&item("d").sku("S-B").build()).await.unwrap();
}

/// Expired documents drop out of indexed lookups too.
pub async fn expired_documents_leave_indexed_lookups(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Ticket>().unwrap();
    let ttl = <Ticket as opstore_domain::Entity>::schema()
        .ttl()
        .unwrap()
        .after;
    let touched = store_now(&*store)
        .await
        .sub(ttl)
        .add(Duration::from_secs(2));
    repo.insert(&ticket("t", "owner-x", 1, touched))
        .await
        .unwrap();
    assert_eq!(
        repo.count(&Filter::eq("owner", "owner-x")).await.unwrap(),
        1
    );
    h.advance(Duration::from_secs(3)).await;
    assert_eq!(
        repo.get_by_field("owner", json!("owner-x")).await.unwrap(),
        None
    );
}

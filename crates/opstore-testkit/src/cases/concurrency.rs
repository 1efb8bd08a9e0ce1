//! Concurrency: many tasks against one store lose no write and never double-hand work.

use std::collections::HashSet;

use opstore_domain::{Filter, Query, Repository, StoreExt, Update};

use crate::Harness;
use crate::fixtures::{Item, item, upsert_item};

/// 50 tasks incrementing one document lose no increment.
pub async fn concurrent_incs_lose_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("ctr").build()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(
                async move { repo.update_one("ctr", &Update::new().inc("count", 1)).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(repo.get("ctr").await.unwrap().unwrap().count, 50);
}

/// Concurrent `update_many` incs over the same documents lose nothing.
pub async fn concurrent_update_many_incs_lose_nothing(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert_many(&[item("a").build(), item("b").build(), item("c").build()])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.update_many(&Filter::all(), &Update::new().inc("count", 2))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().modified, 3);
    }
    let total = repo
        .aggregate(&Filter::all(), "count", opstore_domain::Agg::Sum)
        .await
        .unwrap();
    assert_eq!(total.as_i64(), Some(120));
}

/// Of 8 concurrent inserts of one key exactly one succeeds; the rest are `Conflict`.
pub async fn concurrent_inserts_of_one_key_have_one_winner(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.insert(&item("same").count(i).build()).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

/// Concurrent upserts of one key create it once and apply every update.
pub async fn concurrent_upserts_of_one_key_create_it_once(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let u = upsert_item("n").inc("weight", 1.0);
                repo.upsert("k", &u).await
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    let doc = repo.get("k").await.unwrap().unwrap();
    assert_eq!(doc.weight, Some(8.0));
}

/// Concurrent claimers never receive the same document, and together take all.
pub async fn concurrent_claims_never_hand_a_doc_twice(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..40)
        .map(|i| item(&format!("job{i:02}")).state("queued").build())
        .collect();
    repo.insert_many(&docs).await.unwrap();
    if !store.capabilities().claim {
        let q = Query::filter(Filter::eq("status.state", "queued")).limit(1);
        crate::fixtures::assert_unsupported(
            repo.claim(&q, &Update::new().set("status.state", "taken"))
                .await,
            "claim",
        );
        return;
    }
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let q = Query::filter(Filter::eq("status.state", "queued")).limit(3);
                    let u = Update::new()
                        .set("status.state", "taken")
                        .set("note", format!("w{w}"));
                    let got = repo.claim(&q, &u).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for doc in got {
                        assert_eq!(doc.note.as_deref(), Some(format!("w{w}").as_str()));
                        mine.push(doc.id);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a document was claimed twice");
    assert_eq!(all.len(), 40);
    assert_eq!(
        repo.count(&Filter::eq("status.state", "taken"))
            .await
            .unwrap(),
        40
    );
}

/// `claim` takes up to `limit` documents in query order and returns them updated.
pub async fn claim_takes_in_query_order_up_to_limit(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    for (id, prio) in [("a", 3), ("b", 9), ("c", 5), ("d", 1)] {
        repo.insert(&item(id).count(prio).state("queued").build())
            .await
            .unwrap();
    }
    let q = Query::filter(Filter::eq("status.state", "queued"))
        .sort_desc("count")
        .limit(2);
    let u = Update::new().set("status.state", "taken");
    let result = repo.claim(&q, &u).await;
    if !store.capabilities().claim {
        crate::fixtures::assert_unsupported(result, "claim");
        return;
    }
    let got = result.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    assert!(got.iter().all(|d| d.status.state == "taken"));
    let next = repo.claim(&q, &u).await.unwrap();
    assert_eq!(
        next.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["a", "d"]
    );
    assert!(repo.claim(&q, &u).await.unwrap().is_empty());
}

/// Readers running beside writers always see whole documents.
pub async fn concurrent_readers_see_whole_documents(h: &impl Harness) {
    let store = h.store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("doc").count(0).note("0").build())
        .await
        .unwrap();
    let writer_repo = repo.clone();
    let writer = tokio::spawn(async move {
        for i in 1..=30 {
            let u = Update::new().set("count", i).set("note", i.to_string());
            writer_repo.update_one("doc", &u).await.unwrap();
        }
    });
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                for _ in 0..30 {
                    let doc = repo.get("doc").await.unwrap().unwrap();
                    assert_eq!(doc.note, Some(doc.count.to_string()), "torn read");
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(repo.get("doc").await.unwrap().unwrap().count, 30);
}

//! Transactions: commit, rollback, isolation, row locks, results and fencing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use opstore_domain::{
    Filter, Isolation, Repository, Result, StoreError, StoreExt, TxExt, TxHandle, TxOptions,
    Update, run_transaction,
};
use tokio::sync::oneshot;

use crate::Harness;
use crate::fixtures::{
    Item, LIVENESS_GUARD, Ticket, item, lacks_row_locks, lacks_transactions, store_now, ticket,
};

/// Writes of a committed transaction are all visible afterwards.
pub async fn tx_commit_makes_all_writes_visible(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("existing").count(1).build())
        .await
        .unwrap();
    let work = |tx: TxHandle| -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let items = tx.repository::<Item>()?;
            items.insert(&item("a").build()).await?;
            items.insert(&item("b").build()).await?;
            items
                .update_one("existing", &Update::new().inc("count", 1))
                .await?;
            Ok(())
        })
    };
    store
        .transaction(TxOptions::default(), &work)
        .await
        .unwrap();
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 3);
    assert_eq!(repo.get("existing").await.unwrap().unwrap().count, 2);
}

/// A transaction whose work fails leaves nothing behind and returns the work's error.
pub async fn tx_error_rolls_back_everything(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("keep").count(1).build()).await.unwrap();
    repo.insert(&item("gone").build()).await.unwrap();
    let result: Result<()> = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        items.insert(&item("new").build()).await?;
        items
            .update_one("keep", &Update::new().set("count", 99))
            .await?;
        items.delete("gone").await?;
        Err(StoreError::NotFound("work gave up on purpose".into()))
    })
    .await;
    assert!(result.unwrap_err().is_not_found());
    assert_eq!(repo.get("new").await.unwrap(), None);
    assert_eq!(repo.get("keep").await.unwrap().unwrap().count, 1);
    assert!(repo.get("gone").await.unwrap().is_some());
}

/// A failing write inside the transaction rolls back the writes before it.
pub async fn tx_conflict_inside_rolls_back_earlier_writes(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("dup").build()).await.unwrap();
    let result: Result<()> = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        items.insert(&item("first").build()).await?;
        items.insert(&item("dup").build()).await?;
        Ok(())
    })
    .await;
    assert!(result.unwrap_err().is_conflict());
    assert_eq!(repo.get("first").await.unwrap(), None);
}

/// A rollback covers every collection the transaction wrote.
pub async fn tx_rollback_spans_collections(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let now = store_now(&*store).await;
    let result: Result<()> = run_transaction(&*store, TxOptions::default(), move |tx| async move {
        tx.repository::<Item>()?.insert(&item("i").build()).await?;
        tx.repository::<Ticket>()?
            .insert(&ticket("t", "o", 1, now))
            .await?;
        Err(StoreError::Validation("abort".into()))
    })
    .await;
    assert!(result.is_err());
    assert_eq!(
        store.repository::<Item>().unwrap().get("i").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .repository::<Ticket>()
            .unwrap()
            .get("t")
            .await
            .unwrap(),
        None
    );
}

/// A transaction reads its own uncommitted writes.
pub async fn tx_reads_its_own_writes(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let seen = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        items.insert(&item("a").count(5).build()).await?;
        items
            .update_one("a", &Update::new().inc("count", 1))
            .await?;
        Ok((
            items.get("a").await?.map(|i| i.count),
            items.count(&Filter::all()).await?,
        ))
    })
    .await
    .unwrap();
    assert_eq!(seen, (Some(6), 1));
}

/// `run_transaction` hands back the work's value after commit.
pub async fn tx_run_transaction_returns_value(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    store
        .repository::<Item>()
        .unwrap()
        .insert(&item("a").count(41).build())
        .await
        .unwrap();
    let value = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        let after = items
            .update_one("a", &Update::new().inc("count", 1))
            .await?;
        Ok(format!("count={}", after.count))
    })
    .await
    .unwrap();
    assert_eq!(value, "count=42");
}

/// A reader outside an open transaction does not see its uncommitted writes, and
/// sees them after commit.
pub async fn tx_uncommitted_writes_are_invisible_to_other_readers(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("existing").count(1).build())
        .await
        .unwrap();
    let (written_tx, written_rx) = oneshot::channel::<()>();
    let (read_tx, read_rx) = oneshot::channel::<()>();
    let written = Arc::new(Mutex::new(Some(written_tx)));
    let read = Arc::new(Mutex::new(Some(read_rx)));
    let reader_repo = repo.clone();
    let reader = tokio::spawn(async move {
        written_rx.await.unwrap();
        let new = reader_repo.get("new").await.unwrap();
        let existing = reader_repo.get("existing").await.unwrap().unwrap().count;
        let total = reader_repo.count(&Filter::all()).await.unwrap();
        read_tx.send(()).unwrap();
        (new, existing, total)
    });
    run_transaction(&*store, TxOptions::default(), move |tx| {
        let written = Arc::clone(&written);
        let read = Arc::clone(&read);
        async move {
            let items = tx.repository::<Item>()?;
            items.insert(&item("new").build()).await?;
            items
                .update_one("existing", &Update::new().set("count", 2))
                .await?;
            let signal = written.lock().unwrap().take();
            let wait = read.lock().unwrap().take();
            if let (Some(signal), Some(wait)) = (signal, wait) {
                let _ = signal.send(());
                // Guard only: a reader blocked by the open transaction fails the case.
                if tokio::time::timeout(LIVENESS_GUARD, wait).await.is_err() {
                    return Err(StoreError::Timeout(
                        "reader blocked by an open transaction".into(),
                    ));
                }
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    let (new, existing, total) = reader.await.unwrap();
    assert_eq!((new, existing, total), (None, 1, 1));
    assert!(repo.get("new").await.unwrap().is_some());
    assert_eq!(repo.get("existing").await.unwrap().unwrap().count, 2);
}

/// `get_for_update` inside a transaction reads the row; the update commits.
pub async fn tx_get_for_update_reads_and_locks_row(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    store
        .repository::<Item>()
        .unwrap()
        .insert(&item("a").count(1).build())
        .await
        .unwrap();
    let result = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        let Some(doc) = items.get_for_update("a").await? else {
            return Ok(None);
        };
        items
            .update_one("a", &Update::new().set("count", doc.count * 10))
            .await?;
        Ok(Some(doc.count))
    })
    .await;
    if !store.capabilities().row_locks {
        crate::fixtures::assert_unsupported(result, "row locks");
        return;
    }
    assert_eq!(result.unwrap(), Some(1));
    assert_eq!(
        store
            .repository::<Item>()
            .unwrap()
            .get("a")
            .await
            .unwrap()
            .unwrap()
            .count,
        10
    );
}

/// `get_for_update` of a missing key is `Ok(None)`.
pub async fn tx_get_for_update_of_missing_key_is_none(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await || lacks_row_locks(&*store).await {
        return;
    }
    let got = run_transaction(&*store, TxOptions::default(), |tx| async move {
        tx.repository::<Item>()?.get_for_update("nope").await
    })
    .await
    .unwrap();
    assert_eq!(got, None);
}

/// Concurrent read-modify-write transactions with `get_for_update` lose no update.
pub async fn tx_concurrent_read_modify_write_loses_nothing(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await || lacks_row_locks(&*store).await {
        return;
    }
    store
        .repository::<Item>()
        .unwrap()
        .insert(&item("ctr").build())
        .await
        .unwrap();
    let options = TxOptions {
        isolation: Isolation::Serializable,
        max_retries: 50,
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                run_transaction(&*store, options, |tx| async move {
                    let items = tx.repository::<Item>()?;
                    let doc = items
                        .get_for_update("ctr")
                        .await?
                        .ok_or(StoreError::NotFound("ctr".into()))?;
                    items
                        .update_one("ctr", &Update::new().set("count", doc.count + 1))
                        .await?;
                    Ok(())
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        store
            .repository::<Item>()
            .unwrap()
            .get("ctr")
            .await
            .unwrap()
            .unwrap()
            .count,
        8
    );
}

/// `check_fence` with the live lease lets the transaction commit.
pub async fn tx_check_fence_with_live_lease_commits(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let lease = store
        .locks()
        .try_acquire("fence", "a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    run_transaction(&*store, TxOptions::default(), move |tx| {
        let lease = lease.clone();
        async move {
            tx.check_fence(&lease).await?;
            tx.repository::<Item>()?
                .insert(&item("fenced").build())
                .await
        }
    })
    .await
    .unwrap();
    assert!(
        store
            .repository::<Item>()
            .unwrap()
            .get("fenced")
            .await
            .unwrap()
            .is_some()
    );
}

/// `check_fence` with a lease taken over by someone else is `LockLost` and the
/// transaction writes nothing.
pub async fn tx_check_fence_with_stale_lease_fails(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let locks = store.locks();
    let stale = locks
        .try_acquire("fence", "a", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    h.advance(Duration::from_secs(3)).await;
    locks
        .try_acquire("fence", "b", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let result: Result<()> = run_transaction(&*store, TxOptions::default(), move |tx| {
        let stale = stale.clone();
        async move {
            tx.repository::<Item>()?
                .insert(&item("stale-write").build())
                .await?;
            tx.check_fence(&stale).await
        }
    })
    .await;
    assert!(result.unwrap_err().is_lock_lost());
    assert_eq!(
        store
            .repository::<Item>()
            .unwrap()
            .get("stale-write")
            .await
            .unwrap(),
        None
    );
}

/// Validation errors inside a transaction surface unchanged and roll it back.
pub async fn tx_validation_error_inside_rolls_back(h: &impl Harness) {
    let store = h.store().await;
    if lacks_transactions(&*store).await {
        return;
    }
    let result: Result<()> = run_transaction(&*store, TxOptions::default(), |tx| async move {
        let items = tx.repository::<Item>()?;
        items.insert(&item("a").build()).await?;
        items
            .update_one("a", &Update::new().set("colour", "red"))
            .await?;
        Ok(())
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("colour"),
        "{err}"
    );
    assert_eq!(
        store.repository::<Item>().unwrap().get("a").await.unwrap(),
        None
    );
}

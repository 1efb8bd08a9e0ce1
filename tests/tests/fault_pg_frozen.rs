//! A PostgreSQL server that stops answering without closing its connections (a
//! hung host, a silent partition): every call returns `Timeout` once the call
//! timeout runs out instead of blocking its caller, the transaction cut off
//! commits nothing, and the store serves again once the server resumes.
//!
//! Needs the throwaway cluster's binaries (`OPSTORE_TEST_PG_BINDIR`, exported by
//! `cargo xtask test`); the test freezes a cluster of its own with `SIGSTOP`.

mod fault_support;

use std::sync::Arc;
use std::time::Duration;

use fault_support::{HANG_GUARD, PgCluster};
use opstore_domain::{
    Entity, Repository, Store, StoreError, StoreExt, TxExt, TxOptions, Update, run_transaction,
};
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::fixtures::{Item, item};
use tokio::sync::oneshot;

/// Far below [`HANG_GUARD`], so a call that waits on the frozen server past it
/// can only be a call the timeout did not bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn config(cluster: &PgCluster) -> PgConfig {
    let mut config = PgConfig::from_url(cluster.url(""));
    config.max_connections = 3;
    config.acquire_timeout = Duration::from_secs(1);
    config.call_timeout = Some(CALL_TIMEOUT);
    config
}

fn is_timeout(e: &StoreError) -> bool {
    matches!(e, StoreError::Timeout(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_costs_callers_the_call_timeout_and_loses_no_write() {
    let Some(cluster) = PgCluster::start_plain().await else {
        return;
    };
    let store = PgStore::connect(config(&cluster)).await.unwrap();
    store.migrate(&[Item::schema()]).await.unwrap();
    let items = store.repository::<Item>().unwrap();
    items.insert(&item("a").count(1).build()).await.unwrap();

    // A transaction that holds its connection when the server freezes, so only
    // the call timeout can end its next statement.
    let (began, began_rx) = oneshot::channel::<()>();
    let (frozen_tx, frozen) = oneshot::channel::<()>();
    let began = Arc::new(std::sync::Mutex::new(Some(began)));
    let frozen = Arc::new(tokio::sync::Mutex::new(Some(frozen)));
    let tx_store = store.clone();
    let transaction = tokio::spawn(async move {
        run_transaction(&tx_store, TxOptions::default(), move |tx| {
            let began = began.lock().unwrap().take();
            let frozen = Arc::clone(&frozen);
            async move {
                let items = tx.repository::<Item>()?;
                items.get("a").await?;
                if let Some(began) = began {
                    let _ = began.send(());
                }
                if let Some(frozen) = frozen.lock().await.take() {
                    let _ = frozen.await;
                }
                items
                    .update_one("a", &Update::new().set("count", 2))
                    .await?;
                Ok(())
            }
        })
        .await
    });
    began_rx.await.expect("the transaction began");
    let guard = cluster.freeze();
    frozen_tx.send(()).unwrap();

    let cut_off = tokio::time::timeout(HANG_GUARD, transaction)
        .await
        .expect("a statement on the frozen server hung its transaction")
        .unwrap()
        .unwrap_err();
    assert!(is_timeout(&cut_off), "{cut_off:?}");
    assert!(
        cut_off.to_string().contains("call timeout"),
        "names the call timeout: {cut_off}"
    );

    // Calls on the pool are bounded too, whether they wait for a connection or
    // for an answer.
    let plain = tokio::time::timeout(HANG_GUARD, items.get("a"))
        .await
        .expect("a read from the frozen server hung")
        .unwrap_err();
    assert!(is_timeout(&plain), "{plain:?}");
    let write = tokio::time::timeout(HANG_GUARD, items.insert(&item("b").build()))
        .await
        .expect("a write to the frozen server hung")
        .unwrap_err();
    assert!(is_timeout(&write), "{write:?}");

    drop(guard);
    // Connections cut off mid-call are discarded; the store serves again, and
    // the transaction that was cut off committed nothing.
    let item = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Ok(found) = items.get("a").await {
                return found;
            }
        }
    })
    .await
    .expect("the store did not serve again after the server resumed")
    .expect("item `a` is still there");
    assert_eq!(item.count, 1, "the cut-off transaction must not commit");
    store.close().await;
}

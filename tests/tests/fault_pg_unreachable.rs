//! A PostgreSQL server that is not there: a refused connection is reported as a
//! `Connection` error naming the refusal, not as a pool `Timeout`, both when a
//! store connects and when the server of a connected store has stopped.
//!
//! Needs the throwaway cluster's binaries (`OPSTORE_TEST_PG_BINDIR`, exported by
//! `cargo xtask test`); each test starts and stops a cluster of its own.

mod fault_support;

use std::sync::Arc;
use std::time::Duration;

use fault_support::{HANG_GUARD, PgCluster};
use opstore_domain::{Entity, Repository, Store, StoreError, StoreExt};
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::fixtures::{Item, item};

fn config(cluster: &PgCluster) -> PgConfig {
    let mut config = PgConfig::from_url(cluster.url(""));
    config.max_connections = 2;
    config.acquire_timeout = Duration::from_secs(1);
    config
}

fn names_the_refusal(e: &StoreError) -> bool {
    matches!(e, StoreError::Connection(m) if m.to_ascii_lowercase().contains("refused"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_stopped_server_fail_as_refused_connections_not_timeouts() {
    let Some(cluster) = PgCluster::start_plain().await else {
        return;
    };
    let store = PgStore::connect(config(&cluster)).await.unwrap();
    store.migrate(&[Item::schema()]).await.unwrap();
    let items = store.repository::<Item>().unwrap();
    items.insert(&item("a").build()).await.unwrap();

    let stopping = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    // Pooled connections die with the server and may fail first as broken
    // connections; once the pool must open a new one, the refusal shows.
    let mut errors = Vec::new();
    let refused = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let e = items.get("a").await.unwrap_err();
            let refused = names_the_refusal(&e);
            errors.push(e);
            if refused {
                return;
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "no refusal reported: {errors:?}");
    assert!(
        errors.iter().all(|e| e.is_connection()),
        "a stopped server is a connection error, never a timeout: {errors:?}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_stopped_server_is_a_refused_connection() {
    let Some((bindir, runas)) = PgCluster::bindir_from_env() else {
        return;
    };
    let cluster = tokio::task::spawn_blocking(move || {
        let cluster = PgCluster::start(&bindir, &runas, None);
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(HANG_GUARD, PgStore::connect(config(&cluster)))
        .await
        .expect("connect hung")
        .unwrap_err();
    assert!(names_the_refusal(&err), "{err:?}");
}

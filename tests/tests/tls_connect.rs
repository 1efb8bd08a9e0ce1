//! TLS to PostgreSQL and to a MongoDB-wire server with certificates made at
//! test time: the right CA connects with full verification, a wrong CA is
//! refused with a `Connection` error, and the application's `StoreConfig` TLS
//! files reach the driver.
//!
//! Each case starts its own server (PostgreSQL with `ssl = on`, SecantusDB with
//! `--tls-cert-file`/`--tls-key-file`) from the binaries `cargo xtask test`
//! provides, and makes its CA and server certificate (SAN `localhost` and
//! `127.0.0.1`) with the `openssl` command.

mod fault_support;

use std::sync::Arc;
use std::time::Duration;

use fault_support::{PgCluster, Secantus, TestPki, secantusd_from_env, unique};
use opstore_app::StoreConfig;
use opstore_domain::{Entity, Repository, Store, StoreError, StoreExt};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::fixtures::{Item, item};

/// Migrates, writes and reads back one item.
async fn round_trip(store: &dyn Store) {
    store.migrate(&[Item::schema()]).await.unwrap();
    let items = store.repository::<Item>().unwrap();
    items.insert(&item("over-tls").build()).await.unwrap();
    assert_eq!(items.get("over-tls").await.unwrap().unwrap().id, "over-tls");
}

fn assert_refused<T>(result: Result<T, StoreError>, what: &str) -> String {
    match result {
        Err(e @ StoreError::Connection(_)) => e.to_string(),
        Err(e) => panic!("{what}: expected a Connection error, got {e:?}"),
        Ok(_) => panic!("{what}: connected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_accepts_its_ca_and_refuses_another() {
    let Some((bindir, runas)) = PgCluster::bindir_from_env() else {
        return;
    };
    let Some(pki) = TestPki::generate("postgres") else {
        return;
    };
    let tls = pki.server();
    let cluster =
        tokio::task::spawn_blocking(move || PgCluster::start(&bindir, &runas, Some(&tls)))
            .await
            .unwrap();
    let verify = |ca: &std::path::Path| {
        let mut config = PgConfig::from_url(
            cluster.url(&format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        );
        config.acquire_timeout = Duration::from_secs(5);
        config
    };

    let store = PgStore::connect(verify(&pki.ca()))
        .await
        .expect("verify-full with the signing CA connects");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted, "the session is not encrypted");
    round_trip(&store).await;
    store.close().await;

    let refused = assert_refused(
        PgStore::connect(verify(&pki.wrong_ca())).await,
        "verify-full with a CA that signed nothing the server presents",
    );
    assert!(!refused.contains("password"), "{refused}");

    // The application's TLS files become `sslrootcert`.
    let mut config = StoreConfig::from_url(&cluster.url("sslmode=verify-full")).unwrap();
    config.connect_timeout = Duration::from_secs(5);
    config.tls.ca_file = Some(pki.ca());
    let store = opstore_app::wiring::connect(&config)
        .await
        .expect("StoreConfig with the CA file connects");
    store.health().await.unwrap();
    store.close().await;
    config.tls.ca_file = Some(pki.wrong_ca());
    assert_refused(
        opstore_app::wiring::connect(&config).await,
        "StoreConfig with a wrong CA file",
    );
    println!(
        "FIGURES tls_postgres sslmode=verify-full right_ca=connected(ssl=true) wrong_ca=refused(Connection) store_config_ca_file=connected wrong_store_config_ca_file=refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_tls_accepts_its_ca_and_refuses_another() {
    let Some(launcher) = secantusd_from_env() else {
        return;
    };
    let Some(pki) = TestPki::generate("mongo") else {
        return;
    };
    let tls = pki.server();
    let server = tokio::task::spawn_blocking(move || Secantus::start(&launcher, Some(tls)))
        .await
        .unwrap();
    let connect = |params: String| {
        let mut config = MongoConfig::new(server.url(&params), unique("tls"));
        config.connect_timeout = Duration::from_secs(3);
        config.server_selection_timeout = Duration::from_secs(3);
        config.clock = ExpiryClock::Client;
        MongoStore::connect(config)
    };

    let store: Arc<dyn Store> = Arc::new(
        connect(format!("tls=true&tlsCAFile={}", pki.ca().display()))
            .await
            .expect("TLS with the signing CA connects"),
    );
    round_trip(&*store).await;
    store.close().await;

    assert_refused(
        connect(format!("tls=true&tlsCAFile={}", pki.wrong_ca().display())).await,
        "TLS with a CA that signed nothing the server presents",
    );
    assert_refused(connect(String::new()).await, "plain text to a TLS server");

    // The application's TLS files become `tls=true&tlsCAFile=...`.
    let mut config = StoreConfig::from_url(&server.url("")).unwrap();
    config.connect_timeout = Duration::from_secs(3);
    config.database = Some(unique("tls"));
    config.tls.ca_file = Some(pki.ca());
    let store = opstore_app::wiring::connect(&config)
        .await
        .expect("StoreConfig with the CA file connects");
    store.health().await.unwrap();
    store.close().await;
    config.tls.ca_file = Some(pki.wrong_ca());
    assert_refused(
        opstore_app::wiring::connect(&config).await,
        "StoreConfig with a wrong CA file",
    );
    println!(
        "FIGURES tls_mongo tls=true right_ca=connected wrong_ca=refused(Connection) plaintext=refused(Connection) store_config_ca_file=connected wrong_store_config_ca_file=refused"
    );
}

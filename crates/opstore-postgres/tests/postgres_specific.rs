//! Behaviour specific to the PostgreSQL adapter, on the server named by
//! `OPSTORE_POSTGRES_URL`. The restart case also needs the throwaway cluster's
//! `OPSTORE_TEST_PG_DATADIR`, `OPSTORE_TEST_PG_BINDIR`, `OPSTORE_TEST_PG_RUNAS`
//! (user for `runuser`, or empty) and `OPSTORE_TEST_PG_PORT`, which
//! `cargo xtask test` exports.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::StreamExt;
use opstore_domain::{
    Begin, ChangeStream, Entity, Filter, Isolation, Query, Repository, Schema, StartAt, Store,
    StoreExt, TxExt, TxOptions, Update, run_transaction,
};
use opstore_postgres::{MAX_DOCUMENT_BYTES, PgConfig, PgStore};
use opstore_testkit::fixtures::{self, Item, item, next_event, watch_items};
use sqlx::Row;
use tokio::sync::{RwLock, oneshot};

/// The restart case takes this exclusively; every other case shares it, so no
/// case of this binary loses its connections to the restart.
static SERVER: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// Whether the server is there; otherwise the calling test reports itself
/// skipped (a failure under CI) and returns.
fn server_present() -> bool {
    opstore_testkit::require_server("postgres", "OPSTORE_POSTGRES_URL").is_some()
}

fn url() -> String {
    std::env::var("OPSTORE_POSTGRES_URL")
        .expect("OPSTORE_POSTGRES_URL must name a PostgreSQL server (cargo xtask test sets it)")
}

fn config(schema: &str) -> PgConfig {
    let mut config = PgConfig::from_url(url());
    config.schema = Some(schema.to_owned());
    config.max_connections = 6;
    config.feed_retention = Duration::from_secs(60);
    config.feed_poll_interval = Duration::from_millis(200);
    config
}

fn fresh_schema() -> String {
    format!("s_{}", uuid::Uuid::new_v4().simple())
}

async fn store_with(config: PgConfig) -> PgStore {
    let store = PgStore::connect(config)
        .await
        .expect("connect to OPSTORE_POSTGRES_URL");
    store
        .migrate(&fixtures::schemas())
        .await
        .expect("migrate fixtures");
    store
}

async fn store() -> PgStore {
    store_with(config(&fresh_schema())).await
}

/// A changelog row's insertion id, from the token's low 8 bytes.
fn changelog_id(token: &opstore_domain::ResumeToken) -> i64 {
    i64::from_be_bytes(token.as_bytes()[8..16].try_into().unwrap())
}

/// A transaction that wrote first but commits last is still delivered, and a
/// reader resuming from the later-numbered change that committed first sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_of_earlier_change_is_not_skipped() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = Arc::new(store().await);
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();

    let (inserted_tx, inserted_rx) = oneshot::channel::<()>();
    let (commit_tx, commit_rx) = oneshot::channel::<()>();
    let signals = Arc::new(Mutex::new(Some((inserted_tx, commit_rx))));
    let slow = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let options = TxOptions {
                isolation: Isolation::ReadCommitted,
                max_retries: 0,
            };
            run_transaction(&*store, options, move |tx| {
                let signals = signals.lock().unwrap().take();
                async move {
                    tx.repository::<Item>()?
                        .insert(&item("early").build())
                        .await?;
                    let (inserted, commit) = signals.expect("the work runs once");
                    inserted.send(()).unwrap();
                    commit.await.unwrap();
                    Ok(())
                }
            })
            .await
        })
    };
    inserted_rx.await.unwrap();
    repo.insert(&item("late").build()).await.unwrap();
    let first = next_event(&mut stream).await;
    assert_eq!(first.key, "late");

    commit_tx.send(()).unwrap();
    slow.await.unwrap().unwrap();
    let second = next_event(&mut stream).await;
    assert_eq!(second.key, "early");
    // The interleaving happened: the early write holds the smaller changelog id,
    // which a reader following insertion ids would have stepped over.
    assert!(changelog_id(&second.token) < changelog_id(&first.token));
    assert!(first.token < second.token);

    let mut resumed = watch_items(&*store, StartAt::After(first.token), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut resumed).await.key, "early");
}

/// Installs a commit hook in `store`'s schema that runs after the feed's commit
/// trigger has drawn the commit number: with `test.hold` set it waits for the
/// advisory lock (4242, schema), with `test.fail` set it fails the commit.
async fn install_commit_hook(store: &PgStore) {
    sqlx::raw_sql(
        "CREATE FUNCTION test_commit_hook() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             IF current_setting('test.hold', true) = 'on' THEN \
                 PERFORM pg_advisory_xact_lock(4242, hashtext(current_schema())); \
             END IF; \
             IF current_setting('test.fail', true) = 'on' THEN \
                 RAISE EXCEPTION 'failing after the commit number was drawn'; \
             END IF; \
             RETURN NULL; \
         END $$; \
         CREATE CONSTRAINT TRIGGER zz_test_commit_hook AFTER INSERT ON opstore_commits \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_hook();",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

/// Inserts `key` in a transaction with the hook setting `setting` switched on.
async fn insert_with_hook(pool: &sqlx::PgPool, key: &str, setting: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config($1, 'on', true)")
        .bind(setting)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO items (doc) VALUES ($1::jsonb)")
        .bind(serde_json::to_string(&item(key).build()).unwrap())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Commit numbers are drawn without a lock, so a larger one can become visible
/// while a smaller one's commit is still in flight: the reader waits for it and
/// delivers both in number order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_in_flight_with_a_smaller_number_is_waited_for() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = Arc::new(store().await);
    install_commit_hook(&store).await;
    let schema = store.config().schema_name().to_owned();
    let mut gate = store.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242, hashtext($1))")
        .bind(&schema)
        .execute(&mut *gate)
        .await
        .unwrap();
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();

    let held = {
        let pool = store.pool().clone();
        tokio::spawn(async move { insert_with_hook(&pool, "held", "test.hold").await })
    };
    // The held commit has drawn its number once it waits for the gate.
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = 4242 AND objsubid = 2 AND NOT granted)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("after").build()).await.unwrap();
    // Nothing may be delivered past the missing number while its commit is in flight.
    let early = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(early.is_err(), "delivered past a commit still in flight");

    sqlx::query("SELECT pg_advisory_unlock(4242, hashtext($1))")
        .bind(&schema)
        .execute(&mut *gate)
        .await
        .unwrap();
    held.await.unwrap().unwrap();
    let first = next_event(&mut stream).await;
    let second = next_event(&mut stream).await;
    assert_eq!((first.key.as_str(), second.key.as_str()), ("held", "after"));
    assert!(first.token < second.token);
    let mut resumed = watch_items(&*store, StartAt::After(first.token), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut resumed).await.key, "after");
}

/// A transaction that fails after drawing its commit number leaves a number no
/// commit will ever have: readers pass it instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_number_of_a_failed_commit_is_passed() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = store().await;
    install_commit_hook(&store).await;
    let mut stream = watch_items(&store, StartAt::Now, None).await.unwrap();
    let failed = insert_with_hook(store.pool(), "doomed", "test.fail").await;
    assert!(failed.is_err(), "the hook fails the commit");
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("after").build()).await.unwrap();
    assert_eq!(next_event(&mut stream).await.key, "after");
    let mut replay = watch_items(&store, StartAt::Beginning, None).await.unwrap();
    assert_eq!(next_event(&mut replay).await.key, "after");
}

/// Many writers committing in random order: a watcher sees every change exactly
/// once, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_change() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = Arc::new(store().await);
    let mut stream = watch_items(&*store, StartAt::Now, None).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let repo = store.repository::<Item>().unwrap();
                for i in 0..25 {
                    repo.insert(&item(&format!("w{w}-{i}")).build())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut seen = BTreeSet::new();
    let mut last = None;
    while seen.len() < 200 {
        let e = next_event(&mut stream).await;
        assert!(
            last.as_ref().is_none_or(|t| *t < e.token),
            "tokens must grow"
        );
        last = Some(e.token.clone());
        assert!(seen.insert(e.key), "each change once");
    }
}

fn restart_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the restart case needs the throwaway cluster of `cargo xtask test` \
             (OPSTORE_TEST_PG_DATADIR, OPSTORE_TEST_PG_BINDIR, OPSTORE_TEST_PG_RUNAS, OPSTORE_TEST_PG_PORT)"
        )
    })
}

/// Restarts the cluster with the options it was started with (`postmaster.opts`),
/// after a checkpoint so the shutdown itself is quick.
async fn restart_server(store: &PgStore) {
    let datadir = restart_env("OPSTORE_TEST_PG_DATADIR");
    let bindir = restart_env("OPSTORE_TEST_PG_BINDIR");
    let runas = restart_env("OPSTORE_TEST_PG_RUNAS");
    let port = restart_env("OPSTORE_TEST_PG_PORT");
    sqlx::query("CHECKPOINT")
        .execute(store.pool())
        .await
        .expect("checkpoint before restart");
    let pg_ctl = format!("{bindir}/pg_ctl");
    let log = format!("{datadir}/restart.log");
    let args = [
        "-D",
        datadir.as_str(),
        "-l",
        log.as_str(),
        "-m",
        "fast",
        "-w",
        "-t",
        "300",
        "restart",
    ];
    let mut cmd = if runas.is_empty() {
        tokio::process::Command::new(&pg_ctl)
    } else {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", runas.as_str(), "--", pg_ctl.as_str()]);
        c
    };
    let status = cmd.args(args).status().await.expect("run pg_ctl restart");
    assert!(
        status.success(),
        "pg_ctl restart of the cluster on port {port} failed: {status}"
    );
}

async fn insert_retrying(repo: &impl Repository<Item>, key: &str) {
    for _ in 0..100 {
        match repo.insert(&item(key).build()).await {
            Ok(()) => return,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            // A commit whose acknowledgement was lost may have happened.
            Err(e) if e.is_conflict() => return,
            Err(e) => panic!("insert {key}: {e}"),
        }
    }
    panic!("insert {key}: the server did not come back");
}

async fn keys_until(stream: &mut ChangeStream, want: usize) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    while keys.len() < want {
        keys.insert(next_event(stream).await.key);
    }
    keys
}

/// A watcher outlives a server restart: it reconnects and resumes from its last
/// position, losing nothing written before or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_survives_server_restart() {
    if !server_present() {
        return;
    }
    let _exclusive = SERVER.write().await;
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let mut stream = watch_items(&store, StartAt::Now, None).await.unwrap();
    for i in 0..20 {
        repo.insert(&item(&format!("before-{i}")).build())
            .await
            .unwrap();
    }
    let first = next_event(&mut stream).await;
    restart_server(&store).await;
    for i in 0..20 {
        insert_retrying(&repo, &format!("after-{i}")).await;
    }
    let mut keys = keys_until(&mut stream, 39).await;
    keys.insert(first.key);
    let expected: BTreeSet<String> = (0..20)
        .flat_map(|i| [format!("before-{i}"), format!("after-{i}")])
        .collect();
    assert_eq!(keys, expected);
}

/// Two stores migrating the same schema at once both succeed; the advisory lock
/// makes one apply every step and the other find them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_do_not_collide() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let schema = fresh_schema();
    let a = PgStore::connect(config(&schema)).await.unwrap();
    let b = PgStore::connect(config(&schema)).await.unwrap();
    let schemas = fixtures::schemas();
    let (ra, rb) = tokio::join!(a.migrate(&schemas), b.migrate(&schemas));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        schemas.len() + 1,
        "{ra:?} {rb:?}"
    );
    assert_eq!(
        ra.unchanged.len() + rb.unchanged.len(),
        schemas.len() + 1,
        "{ra:?} {rb:?}"
    );
    let again = a.migrate(&schemas).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    a.repository::<Item>()
        .unwrap()
        .insert(&item("x").build())
        .await
        .unwrap();
}

const EVIL: &[&str] = &[
    "x'; DROP TABLE items; --",
    "\"); DELETE FROM opstore_leases; --",
    "$1 $$ \\' \\\\ %_ */ /*",
    "Robert'); DROP TABLE opstore_idempotency;--",
];

/// Hostile strings in values, keys, lease names, idempotency keys and processor
/// names are stored as data; hostile field paths and collection names are
/// rejected before any SQL exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injection_attempts_are_data_or_rejected() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    for (i, evil) in EVIL.iter().enumerate() {
        let doc = item(evil)
            .name(evil)
            .note(evil)
            .meta(serde_json::json!({ "k": evil }))
            .build();
        repo.insert(&doc).await.unwrap();
        assert_eq!(repo.get(evil).await.unwrap(), Some(doc));
        assert_eq!(repo.count(&Filter::eq("name", *evil)).await.unwrap(), 1);
        assert_eq!(
            repo.count(&Filter::contains_ci("note", evil))
                .await
                .unwrap(),
            1
        );
        assert_eq!(repo.count(&Filter::eq("meta.k", *evil)).await.unwrap(), 1);
        repo.update_one(evil, &Update::new().set("note", *evil).set("meta.k", *evil))
            .await
            .unwrap();

        let idem = store.idempotency();
        assert_eq!(
            idem.begin(evil, evil, Duration::from_secs(60))
                .await
                .unwrap(),
            Begin::Started
        );
        assert_eq!(
            idem.begin(evil, evil, Duration::from_secs(60))
                .await
                .unwrap(),
            Begin::InProgress
        );
        let token = opstore_domain::ResumeToken::from_bytes(evil.as_bytes().to_vec());
        store.checkpoints().save(evil, &token).await.unwrap();
        assert_eq!(store.checkpoints().load(evil).await.unwrap(), Some(token));

        let lease_name = format!("lease-{i}");
        match store
            .locks()
            .try_acquire(evil, evil, Duration::from_secs(60))
            .await
        {
            Ok(lease) => assert!(lease.is_some()),
            Err(e) => assert!(e.is_validation(), "{e}"),
        }
        assert!(
            store
                .locks()
                .try_acquire(&lease_name, "owner", Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
    }
    for path in [
        "name'; DROP TABLE items; --",
        "meta.k'--",
        "status.state\")",
        "meta.a b",
        "meta..x",
        "",
    ] {
        let err = repo.count(&Filter::eq(path, 1)).await.unwrap_err();
        assert!(err.is_validation(), "{path}: {err}");
        let err = repo
            .update_many(&Filter::All, &Update::new().set(path, 1))
            .await
            .unwrap_err();
        assert!(err.is_validation(), "{path}: {err}");
        let err = repo.find(&Query::new().sort_asc(path)).await.unwrap_err();
        assert!(err.is_validation(), "{path}: {err}");
    }
    let built =
        std::panic::catch_unwind(|| Schema::builder("items; DROP TABLE items", "id").build());
    assert!(
        built.is_err(),
        "a hostile collection name must not make a schema"
    );
    // Every table is still there and holds what was written.
    assert_eq!(repo.count(&Filter::All).await.unwrap(), EVIL.len() as u64);
    assert!(store.locks().list().await.unwrap().len() >= EVIL.len());
}

/// Documents over the documented maximum are `Validation` before anything is
/// sent; a large document under it round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn document_size_limit_is_a_clear_validation_error() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    let huge = item("huge").note(&"x".repeat(64 * 1024 * 1024)).build();
    let err = repo.insert(&huge).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(
        err.to_string().contains(&MAX_DOCUMENT_BYTES.to_string()),
        "{err}"
    );
    let err = repo
        .insert_many(&[item("ok").build(), huge])
        .await
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(repo.get("ok").await.unwrap(), None);
    let big = item("big")
        .note(&"y".repeat(MAX_DOCUMENT_BYTES - 4096))
        .build();
    repo.insert(&big).await.unwrap();
    assert_eq!(repo.get("big").await.unwrap(), Some(big));
}

/// With every connection taken, a call fails with `Timeout` after the acquire
/// timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_exhaustion_is_timeout() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let mut cfg = config(&fresh_schema());
    cfg.max_connections = 1;
    cfg.acquire_timeout = Duration::from_millis(300);
    let store = Arc::new(store_with(cfg).await);
    let (held_tx, held_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let signals = Arc::new(Mutex::new(Some((held_tx, done_rx))));
    let holder = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            run_transaction(&*store, TxOptions::default(), move |_tx| {
                let signals = signals.lock().unwrap().take();
                async move {
                    let (held, done) = signals.expect("the work runs once");
                    held.send(()).unwrap();
                    done.await.unwrap();
                    Ok(())
                }
            })
            .await
        })
    };
    held_rx.await.unwrap();
    let err = store
        .repository::<Item>()
        .unwrap()
        .get("a")
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    done_tx.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(
        store.repository::<Item>().unwrap().get("a").await.unwrap(),
        None
    );
}

/// A statement that outlives `statement_timeout` (here: waiting for a row lock)
/// is `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statement_timeout_is_timeout() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let schema = fresh_schema();
    let locker = Arc::new(store_with(config(&schema)).await);
    let mut cfg = config(&schema);
    cfg.statement_timeout = Some(Duration::from_millis(200));
    let impatient = PgStore::connect(cfg).await.unwrap();
    locker
        .repository::<Item>()
        .unwrap()
        .insert(&item("a").build())
        .await
        .unwrap();
    let (held_tx, held_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let signals = Arc::new(Mutex::new(Some((held_tx, done_rx))));
    let holder = {
        let locker = Arc::clone(&locker);
        tokio::spawn(async move {
            run_transaction(&*locker, TxOptions::default(), move |tx| {
                let signals = signals.lock().unwrap().take();
                async move {
                    tx.repository::<Item>()?.get_for_update("a").await?;
                    let (held, done) = signals.expect("the work runs once");
                    held.send(()).unwrap();
                    done.await.unwrap();
                    Ok(())
                }
            })
            .await
        })
    };
    held_rx.await.unwrap();
    let err = impatient
        .repository::<Item>()
        .unwrap()
        .update_one("a", &Update::new().inc("count", 1))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    done_tx.send(()).unwrap();
    holder.await.unwrap().unwrap();
}

/// Connection failures are `Connection` and never show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_errors_hide_the_password() {
    if !server_present() {
        return;
    }
    let mut cfg = PgConfig::from_url("postgres://opstore:hunter2-secret@127.0.0.1:1/postgres");
    cfg.acquire_timeout = Duration::from_secs(2);
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let err = PgStore::connect(cfg).await.unwrap_err();
    assert!(err.is_connection() || err.is_timeout(), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

/// Tables read naturally in plain SQL, and nested updates keep the typed columns
/// equal to the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_columns_follow_the_document() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = store().await;
    let repo = store.repository::<Item>().unwrap();
    repo.insert(&item("a").name("first").state("new").sku("S-1").build())
        .await
        .unwrap();
    repo.update_one(
        "a",
        &Update::new()
            .set("status.state", "done")
            .set("name", "second")
            .unset("sku"),
    )
    .await
    .unwrap();
    let row = sqlx::query(
        r#"SELECT "id", "name", "status.state", "sku", doc->'status'->>'state' FROM items"#,
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "a");
    assert_eq!(row.get::<String, _>(1), "second");
    assert_eq!(row.get::<String, _>(2), "done");
    assert_eq!(row.get::<Option<String>, _>(3), None);
    assert_eq!(row.get::<String, _>(4), "done");
    assert_eq!(Item::schema().name(), "items");
}

/// Concurrent claimers never take the same document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_are_disjoint() {
    if !server_present() {
        return;
    }
    let _shared = SERVER.read().await;
    let store = Arc::new(store().await);
    let repo = store.repository::<Item>().unwrap();
    let docs: Vec<Item> = (0..60)
        .map(|i| item(&format!("j{i:02}")).state("queued").build())
        .collect();
    repo.insert_many(&docs).await.unwrap();
    let claimers: Vec<_> = (0..6)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let repo = store.repository::<Item>().unwrap();
                let mut mine = Vec::new();
                loop {
                    let q = Query::filter(Filter::eq("status.state", "queued"))
                        .sort_asc("id")
                        .limit(3);
                    let got = repo
                        .claim(&q, &Update::new().set("status.state", format!("taken-{w}")))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|i| i.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), unique.len()), (60, 60));
    let _ = stream_is_send(watch_items(&*store, StartAt::Now, None).await.unwrap());
}

fn stream_is_send(s: ChangeStream) -> impl Send {
    s.boxed()
}

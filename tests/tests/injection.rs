//! An injection corpus through every public entry point, on memory, PostgreSQL
//! and MongoDB: each hostile string is either refused with `Validation` or
//! stored as inert data and read back equal. Nothing it says is executed: after
//! the whole corpus the tables and collections still exist and hold exactly the
//! documents written.

use std::time::Duration;

use opstore_domain::{
    Agg, Begin, Filter, Query, ResumeToken, Store, Update, Value, json, schema::check_name,
};
use opstore_e2e::{Backend, IsolatedStore, docs_schema};

/// Strings that mean something to SQL, MongoDB query/update operators, regular
/// expressions, shells, paths or terminals.
const CORPUS: &[&str] = &[
    "'; DROP TABLE diff_docs; --",
    "\"; DROP TABLE diff_docs; --",
    "') OR 1=1 --",
    "' OR ''='",
    "1; SELECT pg_sleep(10)",
    "$$; DROP SCHEMA public CASCADE; $$",
    "E'\\x27'",
    "\\'; DROP TABLE x; --",
    "$where",
    "$gt",
    "{\"$gt\": \"\"}",
    "{\"$where\": \"sleep(10000)\"}",
    "this.n == 1 || true",
    "function() { return true; }",
    ".*",
    "(a+)+$",
    "%",
    "_",
    "a.b",
    "..",
    "nested.a",
    "`rm -rf /`",
    "$(reboot)",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "${jndi:ldap://x/a}",
    "\u{202e}gnp.exe",
    "日本語'--",
    "; ALLOW FILTERING",
    "' IF EXISTS; --",
];

fn doc(id: &str, text: &str) -> Value {
    json!({
        "id": id,
        "name": text,
        "n": 1,
        "note": text,
        "tags": [text],
        "labels": { "team": text },
        "meta": { "x": text, "y": { "z": text } },
        "nested": { "a": text },
    })
}

/// Field paths built from the corpus: all refused before any query exists.
async fn hostile_paths_are_refused(store: &dyn Store, backend: &str) {
    let c = store.collection(docs_schema()).expect("collection");
    for payload in CORPUS {
        let paths = [
            payload.to_string(),
            format!("name{payload}"),
            format!("meta.{payload}"),
        ];
        for path in &paths {
            // A payload that happens to be a valid path (`nested.a`, `meta.a.b`)
            // is no injection; only malformed or unknown paths must be refused.
            if docs_schema().resolve(path).is_ok() {
                continue;
            }
            let checks = [
                c.count(&Filter::eq(path, 1)).await.map(drop),
                c.find(&Query::new().sort_asc(path)).await.map(drop),
                c.update_many(&Filter::All, &Update::new().set(path, 1))
                    .await
                    .map(drop),
                c.count_by(&Filter::All, path).await.map(drop),
                c.aggregate(&Filter::All, path, Agg::Max).await.map(drop),
            ];
            for (i, r) in checks.into_iter().enumerate() {
                let e = r.expect_err(&format!("{backend}: path {path:?} call {i} accepted"));
                assert!(e.is_validation(), "{backend}: path {path:?} call {i}: {e}");
            }
        }
    }
}

/// Values, keys and filter operands built from the corpus: stored as data and
/// read back equal; filters on them match exactly the document holding them.
async fn hostile_values_are_inert(store: &dyn Store, backend: &str) {
    let c = store.collection(docs_schema()).expect("collection");
    for (i, payload) in CORPUS.iter().enumerate() {
        let key = format!("{payload}#{i}");
        let d = doc(&key, payload);
        c.insert(d.clone())
            .await
            .unwrap_or_else(|e| panic!("{backend}: insert {payload:?}: {e}"));
        let got = c.get(&key).await.expect("get").expect("stored");
        assert!(opstore_e2e::same_value(&got, &d), "{backend}: {got} != {d}");
        for f in [
            Filter::eq("name", *payload),
            Filter::eq("id", key.as_str()),
            Filter::eq("meta.y.z", *payload),
            Filter::eq("labels.team", *payload),
            Filter::is_in("note", [*payload]),
        ] {
            let n = c.count(&f).await.expect("count");
            assert_eq!(n, 1, "{backend}: {f:?}");
        }
        // The needle is literal text: it matches exactly the stored values that
        // contain it (`%`, `_`, `.*` are no wildcards).
        let needle = payload.to_lowercase();
        let expected = CORPUS[..=i]
            .iter()
            .filter(|p| p.to_lowercase().contains(&needle))
            .count() as u64;
        let n = c
            .count(&Filter::contains_ci("nested.a", payload))
            .await
            .expect("count");
        assert_eq!(n, expected, "{backend}: contains {payload:?}");
        let updated = c
            .update_one(
                &key,
                &Update::new().set("meta.x", *payload).push("tags", *payload),
            )
            .await
            .unwrap_or_else(|e| panic!("{backend}: update {payload:?}: {e}"));
        assert_eq!(updated["tags"], json!([payload, payload]), "{backend}");
    }
    // An operator-shaped object is data in inserts; as an update value, MongoDB
    // cannot store `$`-keys and the adapter refuses them with `Validation`.
    let operator = json!({ "$where": "sleep(10000)", "$gt": "" });
    let key = "operator-object";
    let mut d = doc(key, "x");
    d["meta"] = operator.clone();
    c.insert(d).await.expect("insert operator object");
    let got = c.get(key).await.expect("get").expect("stored");
    assert_eq!(got["meta"], operator, "{backend}");
    match c
        .update_one(key, &Update::new().set("meta", operator.clone()))
        .await
    {
        Ok(_) => {}
        Err(e) => assert!(e.is_validation(), "{backend}: {e}"),
    }
    // Nothing was dropped or rewritten: every document is there.
    let total = CORPUS.len() as u64 + 1;
    assert_eq!(
        c.count(&Filter::All).await.expect("count"),
        total,
        "{backend}"
    );
    assert_eq!(
        c.find(&Query::new()).await.expect("find").len() as u64,
        total
    );
}

/// Lease, owner, idempotency-key, fingerprint and processor names from the
/// corpus: `Validation`, or the name works as an opaque identifier.
async fn hostile_names_are_inert(store: &dyn Store, backend: &str) {
    let locks = store.locks();
    let idem = store.idempotency();
    let checkpoints = store.checkpoints();
    let token = ResumeToken::from_bytes(b"\x00'; DROP TABLE x; --".to_vec());
    for (i, payload) in CORPUS.iter().enumerate() {
        // A valid lease name with a hostile owner: refused, or stored verbatim.
        let name = format!("lease-{i}");
        match locks
            .try_acquire(&name, payload, Duration::from_secs(60))
            .await
        {
            Ok(lease) => {
                let lease = lease.expect("free lease");
                assert_eq!(lease.owner(), *payload, "{backend}: owner");
                locks.release(&lease).await.expect("release");
            }
            Err(e) => assert!(e.is_validation(), "{backend}: owner {payload:?}: {e}"),
        }
        match locks
            .try_acquire(payload, payload, Duration::from_secs(60))
            .await
        {
            Ok(Some(lease)) => {
                let current = locks.current(payload).await.expect("current");
                assert_eq!(
                    current.as_ref(),
                    Some(&lease),
                    "{backend}: lease {payload:?}"
                );
                locks.release(&lease).await.expect("release");
            }
            Ok(None) => panic!("{backend}: fresh lease {payload:?} reported held"),
            Err(e) => assert!(e.is_validation(), "{backend}: lease {payload:?}: {e}"),
        }
        match idem.begin(payload, payload, Duration::from_secs(60)).await {
            Ok(Begin::Started) => {
                idem.complete(payload, json!({ "echo": payload }))
                    .await
                    .expect("complete");
                let again = idem.begin(payload, payload, Duration::from_secs(60)).await;
                assert_eq!(
                    again.expect("begin again"),
                    Begin::Completed(json!({ "echo": payload })),
                    "{backend}: idempotency {payload:?}"
                );
            }
            Ok(other) => panic!("{backend}: fresh key {payload:?} gave {other:?}"),
            Err(e) => assert!(e.is_validation(), "{backend}: idempotency {payload:?}: {e}"),
        }
        match checkpoints.save(payload, &token).await {
            Ok(()) => {
                let loaded = checkpoints.load(payload).await.expect("load");
                assert_eq!(
                    loaded.as_ref(),
                    Some(&token),
                    "{backend}: checkpoint {payload:?}"
                );
            }
            Err(e) => assert!(e.is_validation(), "{backend}: checkpoint {payload:?}: {e}"),
        }
    }
}

/// The storage behind the store still exists, seen without the adapter.
async fn storage_is_intact(store: &IsolatedStore, backend: &str) {
    if let Some((pg, schema)) = store.postgres() {
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(schema)
        .fetch_all(pg.pool())
        .await
        .expect("list tables");
        assert!(
            tables.iter().any(|(t,)| t == "diff_docs"),
            "{backend}: tables {tables:?}"
        );
        let (public,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')")
                .fetch_one(pg.pool())
                .await
                .expect("schema check");
        assert!(public, "{backend}: schema public is gone");
    }
    if let Some(mongo) = store.mongo() {
        let names = mongo
            .database()
            .list_collection_names()
            .await
            .expect("list collections");
        assert!(
            names.iter().any(|n| n == "diff_docs"),
            "{backend}: {names:?}"
        );
    }
}

async fn corpus_on(store: IsolatedStore, backend: &str) {
    hostile_paths_are_refused(store.store.as_ref(), backend).await;
    hostile_values_are_inert(store.store.as_ref(), backend).await;
    hostile_names_are_inert(store.store.as_ref(), backend).await;
    storage_is_intact(&store, backend).await;
    println!(
        "injection corpus on {backend}: {} payloads through paths, values, keys and names: 0 executed",
        CORPUS.len()
    );
    store.discard().await;
}

#[tokio::test]
async fn injection_corpus_is_inert_on_memory() {
    corpus_on(IsolatedStore::memory(&[docs_schema()]).await, "memory").await;
}

#[tokio::test]
async fn injection_corpus_is_inert_on_postgres() {
    let Some(url) = Backend::Postgres.url() else {
        return;
    };
    corpus_on(
        IsolatedStore::open(Backend::Postgres, &url, &[docs_schema()]).await,
        "postgres",
    )
    .await;
}

#[tokio::test]
async fn injection_corpus_is_inert_on_mongo() {
    let Some(url) = Backend::Mongo.url() else {
        return;
    };
    corpus_on(
        IsolatedStore::open(Backend::Mongo, &url, &[docs_schema()]).await,
        "mongo",
    )
    .await;
}

/// Collection and schema names are identifiers interpolated into DDL: the
/// corpus is refused by their checks.
#[test]
fn hostile_identifiers_are_refused() {
    for payload in CORPUS {
        // `_` is a valid identifier, not an injection.
        if payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            continue;
        }
        // `_` and `a.b` are valid lease or processor names, not injections.
        let plain = payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
        if !plain {
            assert!(check_name("collection", payload).is_err(), "{payload:?}");
        }
        let mut config = opstore_postgres::PgConfig::from_url("postgres://u@127.0.0.1:1/db");
        config.schema = Some((*payload).to_owned());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt
            .block_on(opstore_postgres::PgStore::connect(config))
            .expect_err("hostile schema accepted");
        // `_` is a valid schema name: the connection to the closed port fails.
        assert!(err.is_validation() || *payload == "_", "{payload:?}: {err}");
    }
}

/// URLs carrying the corpus: a `Validation` or `Connection` error, never a panic
/// and never a store.
#[tokio::test]
async fn hostile_urls_are_refused() {
    for payload in CORPUS {
        for url in [
            payload.to_string(),
            format!("{payload}://h/db"),
            format!("postgres://u@127.0.0.1:1/{payload}"),
            format!("mongodb://127.0.0.1:1/{payload}?serverSelectionTimeoutMS=200"),
            format!("scylla://127.0.0.1:1/{payload}"),
        ] {
            let Ok(mut config) = opstore_app::StoreConfig::from_url(&url) else {
                continue;
            };
            config.connect_timeout = Duration::from_millis(500);
            config.operation_timeout = Duration::from_millis(500);
            match opstore_app::wiring::connect(&config).await {
                Ok(store) => panic!("{url:?} opened a {} store", store.backend()),
                Err(e) => assert!(
                    e.is_validation() || e.is_connection() || e.is_timeout(),
                    "{url:?}: {e}"
                ),
            }
        }
    }
}

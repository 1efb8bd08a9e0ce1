//! The one place outside the adapter crates that names adapter types: it turns a
//! [`StoreConfig`] into a store.

use std::sync::Arc;

use opstore_domain::{Result, Store, StoreError};

use crate::config::{Backend, StoreConfig};

/// Opens the store a configuration selects. A backend whose Cargo feature is off
/// is a `Validation` error naming the feature.
pub async fn connect(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config.url.backend() {
        #[cfg(feature = "memory")]
        Backend::Memory => Ok(memory(config)),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => sqlite(config).await,
        #[cfg(feature = "postgres")]
        Backend::Postgres => postgres(config).await,
        #[cfg(feature = "mongo")]
        Backend::Mongo => mongo(config).await,
        #[cfg(feature = "scylla")]
        Backend::Scylla => scylla(config).await,
        #[allow(unreachable_patterns)]
        other => Err(feature_off(other)),
    }
}

#[cfg(feature = "memory")]
fn memory(config: &StoreConfig) -> Arc<dyn Store> {
    let mut memory = opstore_memory::MemoryConfig::default();
    if let Some(clock) = &config.test_clock {
        memory.clock = Arc::new(clock.clone());
    }
    if let Some(age) = config.feed_retention {
        memory.feed_retention.max_age = age;
    }
    Arc::new(opstore_memory::MemoryStore::new(memory))
}

/// Opens a SQLite database file, created when missing with its directory.
#[cfg(feature = "sqlite")]
async fn sqlite(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    let mut sqlite = opstore_sqlite::SqliteConfig::from_url(config.url.expose());
    sqlite.max_connections = config.pool_size.max(1);
    sqlite.acquire_timeout = config.connect_timeout;
    sqlite.busy_timeout = config.operation_timeout;
    if let Some(clock) = &config.test_clock {
        sqlite.clock = opstore_sqlite::SqliteClock::Manual(clock.clone());
    }
    if let Some(retention) = config.feed_retention {
        sqlite.feed_retention = retention;
    }
    Ok(Arc::new(
        opstore_sqlite::SqliteStore::connect(sqlite).await?,
    ))
}

fn feature_off(backend: Backend) -> StoreError {
    StoreError::Validation(format!(
        "the {backend:?} backend is not compiled in: enable the `{}` feature of opstore-app",
        backend.feature()
    ))
}

/// Appends `key=value` query parameters to a URL.
#[cfg(any(feature = "postgres", feature = "mongo"))]
fn with_params(url: &str, params: &[(&str, String)]) -> String {
    let mut out = url.to_owned();
    for (key, value) in params {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

#[cfg(feature = "postgres")]
async fn postgres(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    if config.test_clock.is_some() {
        return Err(StoreError::Validation(
            "postgres expires leases, idempotency keys and feed history by the database clock; \
             a test clock cannot move it (use the memory or mongo backend)"
                .into(),
        ));
    }
    let mut params = Vec::new();
    if let Some(ca) = &config.tls.ca_file {
        params.push(("sslrootcert", ca.display().to_string()));
    }
    if let Some(cert) = &config.tls.cert_file {
        params.push(("sslcert", cert.display().to_string()));
    }
    if let Some(key) = &config.tls.key_file {
        params.push(("sslkey", key.display().to_string()));
    }
    let mut pg = opstore_postgres::PgConfig::from_url(with_params(config.url.expose(), &params));
    pg.max_connections = config.pool_size;
    pg.acquire_timeout = config.connect_timeout;
    pg.statement_timeout = Some(config.operation_timeout);
    // The server's own limit ends a slow statement with a clear error first; the
    // client's ends a call the server never answers.
    pg.call_timeout = Some(config.operation_timeout + config.connect_timeout);
    pg.schema = config.database.clone();
    if let Some(retention) = config.feed_retention {
        pg.feed_retention = retention;
    }
    Ok(Arc::new(opstore_postgres::PgStore::connect(pg).await?))
}

#[cfg(feature = "mongo")]
async fn mongo(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    let url = config.url.expose();
    let database = config
        .database
        .clone()
        .or_else(|| database_in_path(url))
        .unwrap_or_else(|| "opstore".to_owned());
    let mut params = Vec::new();
    if let Some(ca) = &config.tls.ca_file {
        params.push(("tls", "true".to_owned()));
        params.push(("tlsCAFile", ca.display().to_string()));
    }
    if let Some(cert) = &config.tls.cert_file {
        params.push(("tlsCertificateKeyFile", cert.display().to_string()));
    }
    let mut mongo = opstore_mongo::MongoConfig::new(with_params(url, &params), database);
    mongo.connect_timeout = config.connect_timeout;
    mongo.server_selection_timeout = config.connect_timeout;
    mongo.operation_timeout = config.operation_timeout;
    mongo.feed_retention = config.feed_retention;
    mongo.clock = match (&config.test_clock, config.expiry_clock) {
        (Some(clock), _) => opstore_mongo::ExpiryClock::Manual(clock.clone()),
        (None, crate::config::ExpiryClockSource::Client) => opstore_mongo::ExpiryClock::Client,
        (None, crate::config::ExpiryClockSource::Server) => opstore_mongo::ExpiryClock::Server,
    };
    Ok(Arc::new(opstore_mongo::MongoStore::connect(mongo).await?))
}

/// The database named in a `mongodb://host/db?...` URL path.
#[cfg(feature = "mongo")]
fn database_in_path(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let db = path.split('?').next()?;
    (!db.is_empty()).then(|| db.to_owned())
}

#[cfg(feature = "scylla")]
async fn scylla(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    if config.test_clock.is_some() {
        return Err(StoreError::Validation(
            "scylla expires leases, idempotency keys and TTL rows by the server's clock; \
             a test clock cannot move it (use the memory, postgres or mongo backend)"
                .into(),
        ));
    }
    let mut scylla = opstore_scylla::ScyllaConfig::from_url(config.url.expose())?;
    // Files from the configuration override those named in the URL; the URL's
    // server-name options stay in force.
    if config.tls != crate::config::TlsFiles::default() {
        let mut tls = match (&config.tls.ca_file, scylla.tls.take()) {
            (Some(ca), tls) => tls.map_or_else(
                || opstore_scylla::config::ScyllaTls::new(ca),
                |tls| opstore_scylla::config::ScyllaTls {
                    ca_file: ca.clone(),
                    ..tls
                },
            ),
            (None, Some(tls)) => tls,
            (None, None) => {
                return Err(StoreError::Validation(
                    "scylla TLS needs a CA file (OPSTORE_TLS_CA_FILE or tls_ca_file in the URL) to verify the nodes".into(),
                ));
            }
        };
        if let Some(cert) = &config.tls.cert_file {
            tls.cert_file = Some(cert.clone());
        }
        if let Some(key) = &config.tls.key_file {
            tls.key_file = Some(key.clone());
        }
        scylla.tls = Some(tls);
    }
    if let Some(keyspace) = &config.database {
        scylla.keyspace = keyspace.clone();
    }
    scylla.connect_timeout = config.connect_timeout;
    scylla.request_timeout = config.operation_timeout;
    if let Some(retention) = config.feed_retention {
        scylla.feed.retention = retention;
    }
    Ok(Arc::new(
        opstore_scylla::ScyllaStore::connect(scylla).await?,
    ))
}

/// The benchmark figure types [`bench()`] speaks, re-exported for its callers.
#[cfg(feature = "bench")]
pub use opstore_testkit::bench::{BenchError, Better, Figure, Scale};

/// Runs the benchmark scenarios of the backend a configuration selects, each
/// against that backend's raw-driver baseline in the same run, in a schema,
/// database or keyspace of their own (feature `bench`).
///
/// The scenarios live in the adapter crates (`opstore_memory::bench` and its
/// siblings): only an adapter knows its driver. A backend whose Cargo feature is
/// off is an error naming the feature.
#[cfg(feature = "bench")]
pub async fn bench(
    config: &StoreConfig,
    scale: Scale,
) -> std::result::Result<Vec<Figure>, BenchError> {
    match config.url.backend() {
        #[cfg(feature = "memory")]
        Backend::Memory => opstore_memory::bench::run(scale).await,
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => opstore_sqlite::bench::run(&std::env::temp_dir(), scale).await,
        #[cfg(feature = "postgres")]
        Backend::Postgres => opstore_postgres::bench::run(config.url.expose(), scale).await,
        #[cfg(feature = "mongo")]
        Backend::Mongo => opstore_mongo::bench::run(config.url.expose(), scale).await,
        #[cfg(feature = "scylla")]
        Backend::Scylla => opstore_scylla::bench::run(config.url.expose(), scale).await,
        #[allow(unreachable_patterns)]
        other => Err(BenchError::msg(feature_off(other).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_url_opens_the_memory_store() {
        let store = connect(&StoreConfig::from_url("memory://").unwrap())
            .await
            .unwrap();
        assert_eq!(store.backend(), "memory");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_opens_a_file_that_keeps_its_data_across_opens() {
        use opstore_domain::Repository;
        use opstore_domain::entities::dead_letter::DeadLetter;

        let file =
            std::env::temp_dir().join(format!("opstore-app-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", file.display());
        let config = StoreConfig::from_url(&url).unwrap();
        let first = crate::DataStore::open(&config).await.unwrap();
        assert_eq!(first.store().backend(), "sqlite");
        let id = "dl-1".to_owned();
        let letter = DeadLetter {
            id: id.clone(),
            processor: "p1".into(),
            collection: "errors".into(),
            key: "key-1".into(),
            event: opstore_domain::json!({"op": "delete"}),
            error: "handler failed".into(),
            attempts: 3,
            created_at: opstore_domain::Timestamp::now(),
            replayed_at: None,
        };
        first
            .repository::<DeadLetter>()
            .unwrap()
            .insert(&letter)
            .await
            .unwrap();
        first.close().await;
        let second = crate::DataStore::open(&config).await.unwrap();
        let kept = second
            .repository::<DeadLetter>()
            .unwrap()
            .get(&id)
            .await
            .unwrap();
        assert_eq!(kept.map(|d| d.id), Some(id));
        second.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    #[cfg(not(feature = "scylla"))]
    #[tokio::test]
    async fn a_backend_without_its_feature_names_the_feature() {
        let err = connect(&StoreConfig::from_url("scylla://127.0.0.1:9042/ks").unwrap())
            .await
            .unwrap_err();
        assert!(err.is_validation());
        assert!(err.to_string().contains("`scylla` feature"), "{err}");
    }
}

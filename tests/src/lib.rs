//! Support for opstore's end-to-end tests: which real backends a run reaches,
//! fresh isolated stores on each, and comparison helpers.
//!
//! A server backend is reached through its URL variable (`OPSTORE_POSTGRES_URL`,
//! `OPSTORE_MONGODB_URL`; `cargo xtask test` sets both). Without it a test prints
//! `SKIP <backend>: <reason>` and returns; under `CI=true` a missing URL fails the
//! test instead, so a CI run never passes without its servers. SQLite needs no
//! server: each store is a fresh database file in the system's temporary directory.

use std::sync::{Arc, LazyLock};

use opstore_domain::{
    Field, FieldType, ManualClock, ScalarType, Schema, Store, StoreError, Timestamp, Value,
};
use opstore_memory::{MemoryConfig, MemoryStore};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_postgres::{PgConfig, PgStore};
use opstore_sqlite::{SqliteConfig, SqliteStore};

/// A real backend the end-to-end suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL through `opstore-postgres`.
    Postgres,
    /// MongoDB (or a MongoDB-wire server) through `opstore-mongo`.
    Mongo,
    /// An embedded SQLite file through `opstore-sqlite`.
    Sqlite,
}

impl Backend {
    /// Every backend that needs a server (the divergence suites pin their
    /// documented differences).
    pub const ALL: [Backend; 2] = [Backend::Postgres, Backend::Mongo];

    /// Short name used in SKIP lines and failure messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mongo => "mongo",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The environment variable naming the server (SQLite has none).
    pub fn url_var(self) -> &'static str {
        match self {
            Backend::Postgres => "OPSTORE_POSTGRES_URL",
            Backend::Mongo => "OPSTORE_MONGODB_URL",
            Backend::Sqlite => "",
        }
    }

    /// The server URL for this run, or `None` after reporting the test as skipped
    /// (see [`opstore_testkit::skip`]).
    ///
    /// # Panics
    /// Under `CI=true` when the variable is unset: CI must not pass without the server.
    pub fn url(self) -> Option<String> {
        if self == Backend::Sqlite {
            // The directory of the database files; every store gets its own file.
            return Some(
                std::env::temp_dir()
                    .join("opstore-e2e")
                    .display()
                    .to_string(),
            );
        }
        opstore_testkit::require_server(self.name(), self.url_var())
    }
}

/// Number of property cases: `OPSTORE_SOAK_CASES` when set (soak runs), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("OPSTORE_SOAK_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// A store in its own PostgreSQL schema or MongoDB database, removed by
/// [`discard`](IsolatedStore::discard).
#[derive(Debug)]
pub struct IsolatedStore {
    /// The store, migrated for the requested schemas.
    pub store: Arc<dyn Store>,
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    Memory,
    Postgres(Arc<PgStore>, String),
    Mongo(Arc<MongoStore>),
    Sqlite(std::path::PathBuf),
}

impl IsolatedStore {
    /// A fresh memory store (the reference).
    pub async fn memory(schemas: &[&'static Schema]) -> Self {
        let store = MemoryStore::new(MemoryConfig::default());
        store.migrate(schemas).await.expect("migrate memory store");
        IsolatedStore {
            store: Arc::new(store),
            owner: Owner::Memory,
        }
    }

    /// A fresh store on `backend` at `url`, in a schema or database of its own
    /// (for SQLite, `url` is a directory and the store a new file in it).
    pub async fn open(backend: Backend, url: &str, schemas: &[&'static Schema]) -> Self {
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        let (store, owner): (Arc<dyn Store>, Owner) = match backend {
            Backend::Postgres => {
                let mut config = PgConfig::from_url(url);
                config.schema = Some(name.clone());
                config.max_connections = 4;
                let store = Arc::new(PgStore::connect(config).await.expect("connect postgres"));
                (store.clone(), Owner::Postgres(store, name))
            }
            Backend::Mongo => {
                // A manual expiry clock, as in the conformance harness: with the
                // server clock the test server loses idempotency records between
                // `begin` and `complete` (reported with the divergences).
                let mut config = MongoConfig::new(url, name);
                config.clock = ExpiryClock::Manual(ManualClock::new(Timestamp::now()));
                let store = Arc::new(MongoStore::connect(config).await.expect("connect mongo"));
                (store.clone(), Owner::Mongo(store))
            }
            Backend::Sqlite => {
                let file = std::path::Path::new(url).join(format!("{name}.db"));
                let config = SqliteConfig::from_url(format!("sqlite://{}", file.display()));
                let store = SqliteStore::connect(config)
                    .await
                    .expect("open sqlite file");
                (Arc::new(store), Owner::Sqlite(file))
            }
        };
        store
            .migrate(schemas)
            .await
            .expect("migrate isolated store");
        IsolatedStore { store, owner }
    }

    /// Drops the schema or database and closes the store.
    pub async fn discard(self) {
        match &self.owner {
            Owner::Memory => {}
            Owner::Postgres(pg, schema) => {
                // The name is generated above from a UUID, never caller text.
                let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(pg.pool())
                    .await
                    .expect("drop test schema");
            }
            Owner::Mongo(mongo) => {
                mongo.database().drop().await.expect("drop test database");
            }
            Owner::Sqlite(_) => {}
        }
        self.store.close().await;
        if let Owner::Sqlite(file) = &self.owner {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }

    /// The PostgreSQL store, when this is one (for checks in plain SQL).
    pub fn postgres(&self) -> Option<(&PgStore, &str)> {
        match &self.owner {
            Owner::Postgres(pg, schema) => Some((pg, schema)),
            _ => None,
        }
    }

    /// The MongoDB store, when this is one (for checks with the driver).
    pub fn mongo(&self) -> Option<&MongoStore> {
        match &self.owner {
            Owner::Mongo(m) => Some(m),
            _ => None,
        }
    }
}

/// The schema of the differential and divergence tests: every portable type,
/// nested, optional, unique, indexed, list, set, map and free-form JSON fields.
pub fn docs_schema() -> &'static Schema {
    &DOCS
}

static DOCS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("diff_docs", "id")
        .field(Field::new("name", FieldType::String).indexed())
        .field(Field::new("code", FieldType::String).unique().optional())
        .field(Field::new("n", FieldType::Int).indexed())
        .field(Field::new("f", FieldType::Float).optional())
        .field(Field::new("flag", FieldType::Bool).optional())
        .field(Field::new("at", FieldType::Timestamp).indexed().optional())
        .field(Field::new("note", FieldType::String).optional())
        .field(Field::new("tags", FieldType::List(ScalarType::String)).optional())
        .field(Field::new("nums", FieldType::Set(ScalarType::Int)).optional())
        .field(Field::new("labels", FieldType::Map(ScalarType::String)).optional())
        .field(Field::new("meta", FieldType::Json).optional())
        // Required: an update below an absent optional object is a known divergence
        // (see `update_below_an_absent_optional_object_*`), pinned separately.
        .field(Field::new("nested", FieldType::Object))
        .field(Field::new("nested.a", FieldType::String))
        .field(Field::new("nested.b", FieldType::Int).optional())
        .field(Field::new("nested.t", FieldType::Timestamp).optional())
        .build()
});

/// A schema with an optional object whose declared child is required.
pub fn optional_parent_schema() -> &'static Schema {
    &OPTIONAL_PARENT
}

static OPTIONAL_PARENT: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("diff_opt", "id")
        .field(Field::new("opt", FieldType::Object).optional())
        .field(Field::new("opt.a", FieldType::String))
        .field(Field::new("opt.b", FieldType::Int).optional())
        .build()
});

/// The kind of an error, the part of it the portable contract fixes.
pub fn error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound(_) => "NotFound",
        StoreError::Conflict(_) => "Conflict",
        StoreError::LockHeld(_) => "LockHeld",
        StoreError::LockLost(_) => "LockLost",
        StoreError::Validation(_) => "Validation",
        StoreError::Unsupported(_) => "Unsupported",
        StoreError::ResumeTokenExpired(_) => "ResumeTokenExpired",
        StoreError::Timeout(_) => "Timeout",
        StoreError::Connection(_) => "Connection",
        StoreError::Backend { .. } => "Backend",
    }
}

/// Whether two JSON values are the same observable value: objects ignore key
/// order, and numbers are compared as the decimal a JSON number denotes: an
/// integer by its digits, a float by its shortest round-trip decimal. So `2`
/// equals `2.0`, and `17155868373622780000` equals `1.715586837362278e19`, but
/// `9223372036854775807` does not equal the float it rounds to.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => decimal(a) == decimal(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The decimal text of a number: integers as written, floats by Rust's shortest
/// round-trip digits without an exponent (`-0` as `0`).
fn decimal(v: &Value) -> String {
    let Some(n) = v.as_number() else {
        return String::new();
    };
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(0.0) => "0".to_owned(),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::json;

    #[test]
    fn numbers_compare_by_exact_value() {
        assert!(same_value(&json!(2), &json!(2.0)));
        assert!(same_value(&json!(-0.0), &json!(0)));
        assert!(same_value(
            &json!(17_155_868_373_622_780_000u64),
            &json!(1.715586837362278e19)
        ));
        assert!(!same_value(&json!(i64::MAX), &json!(i64::MAX as f64)));
        assert!(!same_value(&json!(0.1), &json!(0.30000000000000004)));
        assert!(same_value(
            &json!({"a": [1, "x"]}),
            &json!({"a": [1.0, "x"]})
        ));
        assert!(!same_value(&json!({"a": 1}), &json!({"a": 1, "b": null})));
    }
}

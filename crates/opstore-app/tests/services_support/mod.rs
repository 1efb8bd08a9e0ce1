//! Shared by the `services_*` end-to-end tests: the backends to run on, and
//! builders for domain entities.
//!
//! Every test body takes an `Arc<dyn Store>` and runs unchanged on each backend,
//! as one test per backend through [`on_every_backend!`], so a backend that is
//! not there is one skipped test, never a silent pass.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use opstore_domain::entities::all_schemas;
use opstore_domain::entities::control_plane::{Cluster, ClusterStatus};
use opstore_domain::entities::health::HealthEvent;
use opstore_domain::{Store, Timestamp};
use opstore_memory::{MemoryConfig, MemoryStore};

/// A backend the service suites run on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// The in-process store, always there.
    Memory,
    /// A fresh SQLite file, with the `sqlite` feature.
    Sqlite,
    /// `OPSTORE_POSTGRES_URL`, with the `postgres` feature; a schema per test.
    Postgres,
    /// `OPSTORE_MONGODB_URL` (a replica set), with the `mongo` feature; a database
    /// per test.
    Mongo,
}

/// A fresh, migrated store on `backend`, or `None` after reporting the test as
/// skipped (a failure under CI) when its server or Cargo feature is missing.
pub async fn store_on(backend: Backend) -> Option<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match backend {
        Backend::Memory => Arc::new(MemoryStore::new(MemoryConfig::default())),
        Backend::Sqlite => sqlite().await?,
        Backend::Postgres => postgres().await?,
        Backend::Mongo => mongo().await?,
    };
    store.migrate(&all_schemas()).await.expect("migrate");
    Some(store)
}

#[cfg(feature = "sqlite")]
async fn sqlite() -> Option<Arc<dyn Store>> {
    let file =
        std::env::temp_dir().join(format!("opstore-svc-{}.db", uuid::Uuid::new_v4().simple()));
    let config = opstore_sqlite::SqliteConfig::from_url(format!("sqlite://{}", file.display()));
    let store = opstore_sqlite::SqliteStore::connect(config)
        .await
        .expect("open a SQLite file");
    Some(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite() -> Option<Arc<dyn Store>> {
    opstore_testkit::skip(
        "sqlite",
        "built without the `sqlite` feature of opstore-app",
    );
    None
}

#[cfg(feature = "postgres")]
async fn postgres() -> Option<Arc<dyn Store>> {
    let url = opstore_testkit::require_server("postgres", "OPSTORE_POSTGRES_URL")?;
    let mut config = opstore_postgres::PgConfig::from_url(url);
    config.schema = Some(format!("svc_{}", uuid::Uuid::new_v4().simple()));
    config.max_connections = 4;
    let store = opstore_postgres::PgStore::connect(config)
        .await
        .expect("connect to OPSTORE_POSTGRES_URL");
    Some(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres() -> Option<Arc<dyn Store>> {
    opstore_testkit::skip(
        "postgres",
        "built without the `postgres` feature of opstore-app",
    );
    None
}

#[cfg(feature = "mongo")]
async fn mongo() -> Option<Arc<dyn Store>> {
    let url = opstore_testkit::require_server("mongo", "OPSTORE_MONGODB_URL")?;
    let database = format!("svc_{}", uuid::Uuid::new_v4().simple());
    let mut config = opstore_mongo::MongoConfig::new(url, database);
    // The test server (SecantusDB) compares dates against `$$NOW` wrongly, so
    // expiry is judged by the client clock here; real MongoDB uses `Server`.
    config.clock = opstore_mongo::ExpiryClock::Client;
    let store = opstore_mongo::MongoStore::connect(config)
        .await
        .expect("connect to OPSTORE_MONGODB_URL");
    Some(Arc::new(store))
}

#[cfg(not(feature = "mongo"))]
async fn mongo() -> Option<Arc<dyn Store>> {
    opstore_testkit::skip("mongo", "built without the `mongo` feature of opstore-app");
    None
}

/// Expands to one `#[tokio::test]` per named body and backend
/// (`on_every_backend::postgres::<body>`), each running the body (an
/// `async fn(Arc<dyn Store>)` in the test file) on a fresh store.
macro_rules! on_every_backend {
    ($($body:ident),* $(,)?) => {
        mod on_every_backend {
            on_backend!(memory, Memory, $($body),*);
            on_backend!(sqlite, Sqlite, $($body),*);
            on_backend!(postgres, Postgres, $($body),*);
            on_backend!(mongo, Mongo, $($body),*);
        }
    };
}

/// One module of tests, one per body, on one backend.
macro_rules! on_backend {
    ($module:ident, $backend:ident, $($body:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    use $crate::services_support::{Backend, store_on};
                    let Some(store) = store_on(Backend::$backend).await else {
                        return;
                    };
                    super::super::$body(store).await;
                }
            )*
        }
    };
}

/// A fixed instant tests build timestamps from.
pub fn t0() -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000)
}

/// An unhealthy, fatal GPU event on `node`.
pub fn gpu_event(node: &str) -> HealthEvent {
    HealthEvent {
        version: 1,
        agent: "gpu-health-monitor".into(),
        component_class: "GPU".into(),
        check_name: "GpuXidError".into(),
        is_fatal: true,
        is_healthy: false,
        message: "XID 79".into(),
        recommended_action: "RESTART_VM".into(),
        error_codes: vec!["79".into()],
        node_name: node.into(),
        ..HealthEvent::default()
    }
}

/// A PENDING cluster request; the service assigns id and timestamps.
pub fn cluster(name: &str) -> Cluster {
    Cluster {
        id: String::new(),
        name: name.into(),
        platform: "aws".into(),
        version: "4.16".into(),
        profile: "small".into(),
        region: "us-east-1".into(),
        base_domain: "example.test".into(),
        owner: "ann".into(),
        team: "platform".into(),
        cost_center: "cc-1".into(),
        status: ClusterStatus::Pending,
        requested_by: "arn:aws:iam::1:user/ann".into(),
        ttl_hours: 24,
        destroy_at: None,
        tags: BTreeMap::new(),
        created_at: t0(),
        updated_at: t0(),
        destroyed_at: None,
        active_key: None,
    }
}

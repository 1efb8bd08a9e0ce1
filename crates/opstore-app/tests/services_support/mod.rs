//! Shared by the `services_*` end-to-end tests: the backends to run on, and
//! builders for domain entities.
//!
//! Every test body takes an `Arc<dyn Store>` and runs unchanged on each backend
//! [`store_from_env`] returns, through [`on_every_backend!`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use opstore_domain::entities::all_schemas;
use opstore_domain::entities::control_plane::{Cluster, ClusterStatus};
use opstore_domain::entities::health::HealthEvent;
use opstore_domain::{Store, Timestamp};
use opstore_memory::{MemoryConfig, MemoryStore};

/// Fresh, migrated stores for one test: memory always; PostgreSQL when the
/// `postgres` feature is on and `OPSTORE_POSTGRES_URL` names a server (each test
/// gets its own schema); MongoDB when the `mongo` feature is on and
/// `OPSTORE_MONGODB_URL` names a replica set (each test gets its own database).
pub async fn store_from_env() -> Vec<(&'static str, Arc<dyn Store>)> {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(MemoryConfig::default()));
    let mut stores = vec![("memory", memory)];
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("OPSTORE_POSTGRES_URL") {
        let mut config = opstore_postgres::PgConfig::from_url(url);
        config.schema = Some(format!("svc_{}", uuid::Uuid::new_v4().simple()));
        config.max_connections = 4;
        let store = opstore_postgres::PgStore::connect(config)
            .await
            .expect("connect to OPSTORE_POSTGRES_URL");
        stores.push(("postgres", Arc::new(store)));
    }
    #[cfg(feature = "mongo")]
    if let Ok(url) = std::env::var("OPSTORE_MONGODB_URL") {
        let database = format!("svc_{}", uuid::Uuid::new_v4().simple());
        let mut config = opstore_mongo::MongoConfig::new(url, database);
        // The test server (SecantusDB) compares dates against `$$NOW` wrongly, so
        // expiry is judged by the client clock here; real MongoDB uses `Server`.
        config.clock = opstore_mongo::ExpiryClock::Client;
        let store = opstore_mongo::MongoStore::connect(config)
            .await
            .expect("connect to OPSTORE_MONGODB_URL");
        stores.push(("mongo", Arc::new(store)));
    }
    for (_, store) in &mut stores {
        store.migrate(&all_schemas()).await.expect("migrate");
    }
    stores
}

/// Expands to one `#[tokio::test]` per named body, each running the body (an
/// `async fn(Arc<dyn Store>)` in the test file) on every backend.
macro_rules! on_every_backend {
    ($($body:ident),* $(,)?) => {
        mod on_every_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    for (backend, store) in $crate::services_support::store_from_env().await {
                        eprintln!("{}: {backend}", stringify!($body));
                        super::$body(store).await;
                    }
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

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

/// Fresh, migrated stores for one test: memory always; more backends are added
/// here when their environment variables (`OPSTORE_POSTGRES_URL`,
/// `OPSTORE_MONGODB_URL`) name a server.
pub async fn store_from_env() -> Vec<(&'static str, Arc<dyn Store>)> {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(MemoryConfig::default()));
    let mut stores = vec![("memory", memory)];
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

//! The shared conformance suite against a real ScyllaDB when `OPSTORE_SCYLLA_URL`
//! is set (a keyspace per test); without it every case fails loudly, never passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::Store;
use opstore_scylla::{ScanPolicy, ScyllaConfig, ScyllaStore};
use opstore_testkit::{Harness, fixtures};

struct ScyllaHarness;

fn harness() -> ScyllaHarness {
    ScyllaHarness
}

static NEXT: AtomicU64 = AtomicU64::new(0);

#[async_trait]
impl Harness for ScyllaHarness {
    fn name(&self) -> &'static str {
        "scylla"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let url = std::env::var("OPSTORE_SCYLLA_URL").expect("OPSTORE_SCYLLA_URL not set");
        let mut config = ScyllaConfig::from_url(&url).expect("valid OPSTORE_SCYLLA_URL");
        config.keyspace = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // The suite checks portable semantics, including unindexed filters.
        config.scan_policy = ScanPolicy::Bounded { max_rows: 100_000 };
        config.feed.confidence_window = Duration::from_millis(500);
        let store = ScyllaStore::connect(config).await.expect("connect");
        store
            .migrate(&fixtures::schemas())
            .await
            .expect("migrate fixtures");
        Arc::new(store)
    }

    async fn advance(&self, d: Duration) {
        // Server time cannot be moved: wait it out.
        tokio::time::sleep(d).await;
    }
}

opstore_testkit::conformance_tests!(harness());

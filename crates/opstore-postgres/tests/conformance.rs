//! The shared conformance suite on a PostgreSQL server (`OPSTORE_POSTGRES_URL`),
//! one fresh schema per test. Expiry is judged by the server clock, so
//! `advance` waits the time out; the expired-token case gets a store with a
//! few seconds of feed retention so that the wait is short.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::Store;
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::{Harness, fixtures};

/// Feed retention of test stores: well under the suite's maximum, long enough
/// that no case's own history ages out while it runs.
const FEED_RETENTION: Duration = Duration::from_secs(30);

struct PgHarness {
    url: String,
}

/// The harness, or `None` (reported as a skip, a failure under CI) without a server.
fn harness() -> Option<PgHarness> {
    let url = opstore_testkit::require_server("postgres", "OPSTORE_POSTGRES_URL")?;
    Some(PgHarness { url })
}

#[async_trait]
impl Harness for PgHarness {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn store(&self) -> Arc<dyn Store> {
        self.store_with_feed_retention(FEED_RETENTION).await.0
    }

    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn store_with_feed_retention(&self, retention: Duration) -> (Arc<dyn Store>, Duration) {
        let mut config = PgConfig::from_url(self.url.clone());
        config.schema = Some(format!("t_{}", uuid::Uuid::new_v4().simple()));
        config.max_connections = 8;
        config.feed_retention = retention;
        config.feed_poll_interval = Duration::from_millis(200);
        let store = PgStore::connect(config)
            .await
            .expect("connect to OPSTORE_POSTGRES_URL");
        store
            .migrate(&fixtures::schemas())
            .await
            .expect("migrate fixtures");
        (Arc::new(store), retention)
    }
}

opstore_testkit::conformance_tests!(harness());

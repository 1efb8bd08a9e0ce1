//! The shared conformance suite on SQLite with expiry judged by the database
//! clock (`unixepoch('subsec')` in SQL), as in production: nobody can move it,
//! so `advance` waits the time out, and the expired-token case gets a store with
//! a few seconds of feed retention so that the wait is short.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::Store;
use opstore_sqlite::{SqliteConfig, SqliteStore};
use opstore_testkit::{Harness, MAX_FEED_RETENTION, fixtures};

struct DatabaseClockHarness;

/// A database file of its own under the target directory's scratch space.
fn fresh_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("opstore-sqlite");
    let file = dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}", file.display())
}

#[async_trait]
impl Harness for DatabaseClockHarness {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn store(&self) -> Arc<dyn Store> {
        self.store_with_feed_retention(MAX_FEED_RETENTION).await.0
    }

    async fn advance(&self, d: Duration) {
        // The database clock is the system clock: only waiting moves it.
        tokio::time::sleep(d).await;
    }

    async fn store_with_feed_retention(&self, retention: Duration) -> (Arc<dyn Store>, Duration) {
        let mut config = SqliteConfig::from_url(fresh_url());
        config.feed_retention = retention;
        config.feed_poll_interval = Duration::from_millis(100);
        let store = SqliteStore::connect(config)
            .await
            .expect("open a SQLite database file");
        store
            .migrate(&fixtures::schemas())
            .await
            .expect("migrate fixtures");
        (Arc::new(store), retention)
    }
}

opstore_testkit::conformance_tests!(DatabaseClockHarness);

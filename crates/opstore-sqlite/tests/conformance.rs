//! The shared conformance suite on SQLite: one fresh database file per test,
//! expiry judged by a manual clock that `advance` moves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{ManualClock, Store, Timestamp};
use opstore_sqlite::{SqliteClock, SqliteConfig, SqliteStore};
use opstore_testkit::{Harness, MAX_FEED_RETENTION, fixtures};

struct SqliteHarness {
    clock: ManualClock,
}

fn harness() -> SqliteHarness {
    SqliteHarness {
        clock: ManualClock::new(Timestamp::now()),
    }
}

/// A database file of its own under the target directory's scratch space.
fn fresh_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("opstore-sqlite");
    let file = dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}", file.display())
}

#[async_trait]
impl Harness for SqliteHarness {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let mut config = SqliteConfig::from_url(fresh_url());
        config.clock = SqliteClock::Manual(self.clock.clone());
        config.feed_retention = MAX_FEED_RETENTION;
        config.feed_poll_interval = Duration::from_millis(100);
        let store = SqliteStore::connect(config)
            .await
            .expect("open a SQLite database file");
        store
            .migrate(&fixtures::schemas())
            .await
            .expect("migrate fixtures");
        Arc::new(store)
    }

    async fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

opstore_testkit::conformance_tests!(harness());

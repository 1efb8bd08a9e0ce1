//! The shared conformance suite on a MongoDB server (`OPSTORE_MONGODB_URL`),
//! one fresh database per test, with a manual expiry clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{ManualClock, Store, Timestamp};
use opstore_mongo::{ExpiryClock, MongoConfig, MongoStore};
use opstore_testkit::{Harness, fixtures};

struct MongoHarness {
    url: String,
    clock: ManualClock,
}

/// The harness, or `None` (reported as a skip, a failure under CI) without a server.
fn harness() -> Option<MongoHarness> {
    let url = opstore_testkit::require_server("mongo", "OPSTORE_MONGODB_URL")?;
    Some(MongoHarness {
        url,
        clock: ManualClock::new(Timestamp::now()),
    })
}

#[async_trait]
impl Harness for MongoHarness {
    fn name(&self) -> &'static str {
        "mongo"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let database = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut config = MongoConfig::new(self.url.clone(), database);
        config.clock = ExpiryClock::Manual(self.clock.clone());
        config.feed_retention = Some(opstore_testkit::MAX_FEED_RETENTION);
        let store = MongoStore::connect(config)
            .await
            .expect("connect to OPSTORE_MONGODB_URL");
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

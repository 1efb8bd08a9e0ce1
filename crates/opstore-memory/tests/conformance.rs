//! The shared conformance suite on the memory adapter, with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{ManualClock, Store, Timestamp};
use opstore_memory::{FeedRetention, MemoryConfig, MemoryStore};
use opstore_testkit::{Harness, fixtures};

struct MemoryHarness {
    clock: ManualClock,
}

fn harness() -> MemoryHarness {
    MemoryHarness {
        clock: ManualClock::new(Timestamp::now()),
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let store = MemoryStore::new(MemoryConfig {
            clock: Arc::new(self.clock.clone()),
            feed_retention: FeedRetention {
                max_age: Duration::from_secs(60),
                max_entries: 100_000,
            },
        });
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

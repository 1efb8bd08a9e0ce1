//! What a [`MemoryStore`](crate::MemoryStore) is built from.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::{Clock, SystemClock};

use crate::feed::FeedRetention;

/// Configuration of a [`MemoryStore`](crate::MemoryStore).
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Time source for expiry, leases and feed retention.
    pub clock: Arc<dyn Clock>,
    /// How much change history watchers can resume from.
    pub feed_retention: FeedRetention,
}

impl Default for MemoryConfig {
    /// The system clock, one hour or one million changes of history.
    fn default() -> Self {
        MemoryConfig {
            clock: Arc::new(SystemClock),
            feed_retention: FeedRetention {
                max_age: Duration::from_secs(3600),
                max_entries: 1_000_000,
            },
        }
    }
}

//! The shared conformance suite against a real CQL server (ScyllaDB or Apache
//! Cassandra) when `OPSTORE_SCYLLA_URL` is set, a keyspace per test; without it
//! every case reports itself skipped (a failure under CI), never passed.
//!
//! Creating a keyspace and its tables is the slow part of a case (every schema
//! change is flushed and agreed on), and each keyspace costs the server memory, so
//! the harness reuses the keyspaces of finished cases: it empties every table of
//! one (change-log tables included) instead of creating another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::Store;
use opstore_scylla::{ScanPolicy, ScyllaConfig, ScyllaStore};
use opstore_testkit::{Harness, fixtures};

struct ScyllaHarness {
    url: String,
}

/// The harness, or `None` (reported as a skip, a failure under CI) without a server.
fn harness() -> Option<ScyllaHarness> {
    let url = opstore_testkit::require_server("scylla", "OPSTORE_SCYLLA_URL")?;
    Some(ScyllaHarness { url })
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Who is using a keyspace of this test binary.
enum User {
    /// Claimed by a case that is still connecting.
    Connecting,
    /// The store of a case; free once the case has dropped it.
    Case(Weak<ScyllaStore>),
}

static KEYSPACES: Mutex<Vec<(String, User)>> = Mutex::new(Vec::new());

/// Claims a keyspace whose case has finished (`true`), or a new name (`false`).
fn claim_keyspace() -> (String, bool) {
    let mut keyspaces = KEYSPACES.lock().unwrap();
    let free = keyspaces
        .iter_mut()
        .find(|(_, user)| matches!(user, User::Case(weak) if weak.strong_count() == 0));
    if let Some((name, user)) = free {
        *user = User::Connecting;
        return (name.clone(), true);
    }
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    keyspaces.push((name.clone(), User::Connecting));
    (name, false)
}

/// Hands `keyspace` to the case holding `store`.
fn register(keyspace: &str, store: &Arc<ScyllaStore>) {
    let mut keyspaces = KEYSPACES.lock().unwrap();
    if let Some((_, user)) = keyspaces.iter_mut().find(|(name, _)| name == keyspace) {
        *user = User::Case(Arc::downgrade(store));
    }
}

#[async_trait]
impl Harness for ScyllaHarness {
    fn name(&self) -> &'static str {
        "scylla"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let mut config = ScyllaConfig::from_url(&self.url).expect("valid OPSTORE_SCYLLA_URL");
        let (keyspace, reused) = claim_keyspace();
        config.keyspace = keyspace.clone();
        // The suite checks portable semantics, including unindexed filters.
        config.scan_policy = ScanPolicy::Bounded { max_rows: 100_000 };
        config.feed.confidence_window = Duration::from_millis(500);
        let store = Arc::new(ScyllaStore::connect(config).await.expect("connect"));
        if reused {
            store
                .truncate_keyspace()
                .await
                .expect("empty a finished case's keyspace");
        } else {
            store
                .migrate(&fixtures::schemas())
                .await
                .expect("migrate fixtures");
        }
        register(&keyspace, &store);
        store
    }

    async fn advance(&self, d: Duration) {
        // Server time cannot be moved: wait it out.
        tokio::time::sleep(d).await;
    }
}

opstore_testkit::conformance_tests!(harness());

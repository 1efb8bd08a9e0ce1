//! The conformance suite every opstore adapter runs, plus fixtures and builders.
//!
//! An adapter runs all of it with one line in an integration test:
//!
//! ```text
//! opstore_testkit::conformance_tests!(harness());
//! ```
//!
//! where `harness()` returns the adapter's [`Harness`]; see
//! `crates/opstore-memory/tests/conformance.rs` for a complete one. A backend that
//! needs a server returns `Option<impl Harness>` instead, `None` (from
//! [`require_server`]) when the server is absent: each case then reports itself
//! skipped rather than passing or failing.
//!
//! Each case is one behaviour of the port contract, named for it. The macro
//! expands to one `#[tokio::test]` per case, so test runners count and name them.

pub mod bench;
pub mod cases;
pub mod fixtures;
#[cfg(feature = "hostile")]
pub mod hostile;
pub mod server;

pub use server::{is_ci, require_server, skip};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::Store;

/// Longest change-feed retention a harness may configure.
///
/// The expired-token case advances time past this to make a token fall out of the
/// retained history, so a harness must configure its store's feed retention to at
/// most this long.
pub const MAX_FEED_RETENTION: Duration = Duration::from_secs(60);

/// What a backend provides to the suite.
///
/// Contract for implementors:
/// - `store` returns a store isolated from every other case (cases run in
///   parallel), with [`fixtures::schemas`] migrated.
/// - The store's change-feed retention is at most [`MAX_FEED_RETENTION`]: the
///   memory harness uses 60 s; other backends configure a retention the expired-token
///   case can outlive through `advance`.
/// - `advance` moves the clock that judges lease, idempotency, TTL and feed
///   retention expiry. Backends without a controllable clock wait the time out, so
///   cases keep the durations they outlive short (seconds).
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Backend name, for messages.
    fn name(&self) -> &'static str;
    /// A fresh store, isolated from every other test (own schema, database or
    /// keyspace), with the fixture schemas migrated.
    async fn store(&self) -> Arc<dyn Store>;
    /// Lets `d` of the backend's time pass: adapters with a controllable clock move
    /// it; others wait it out.
    async fn advance(&self, d: Duration);
    /// A fresh store like [`store`](Harness::store) whose change-feed retention is
    /// at most `short`, and the retention it keeps. The expired-token case advances
    /// past that retention, so a harness whose `advance` waits real time overrides
    /// this to wait seconds rather than [`MAX_FEED_RETENTION`].
    async fn store_with_feed_retention(&self, short: Duration) -> (Arc<dyn Store>, Duration) {
        let _ = short;
        (self.store().await, MAX_FEED_RETENTION)
    }
}

/// What [`conformance_tests!`] takes: a harness, or `None` when its server is absent.
pub trait MaybeHarness {
    /// The harness inside.
    type Harness: Harness;
    /// The harness, or `None` when the case cannot run (already reported skipped).
    fn into_harness(self) -> Option<Self::Harness>;
}

impl<H: Harness> MaybeHarness for H {
    type Harness = H;
    fn into_harness(self) -> Option<H> {
        Some(self)
    }
}

impl<H: Harness> MaybeHarness for Option<H> {
    type Harness = H;
    fn into_harness(self) -> Option<H> {
        self
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each getting its harness
/// from `$harness` (an expression evaluated per test, returning a [`MaybeHarness`]:
/// `impl Harness`, or `Option<impl Harness>` that is `None` when the case is
/// skipped).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__all_cases!($harness);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($harness:expr, $module:ident :: $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let Some(harness) = $crate::MaybeHarness::into_harness($harness) else {
                return;
            };
            $crate::cases::$module::$case(&harness).await;
        }
    };
}

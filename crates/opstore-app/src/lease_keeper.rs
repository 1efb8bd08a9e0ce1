//! Keeping a lease alive in the background, and stopping work when it is lost.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use opstore_app::lease_keeper::{LeaseKeeper, LeaseKeeperConfig};
//! use opstore_app::{DataStore, StoreConfig};
//!
//! let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
//! let locks = store.locks();
//! let ttl = Duration::from_secs(30);
//! let Some(lease) = locks.try_acquire("reconciler", "worker-1", ttl).await? else {
//!     return Ok(()); // someone else holds it
//! };
//! // Renew every third of the TTL; the token fires if the lease is ever lost.
//! let keeper = LeaseKeeper::start(lease, locks.clone(), LeaseKeeperConfig::new(ttl, 1.0 / 3.0))?;
//! let guard = keeper.cancellation_token();
//! let reconciled = tokio::select! {
//!     _ = guard.cancelled() => false, // lease lost: stop before doing harm
//!     n = async { /* work, fencing its writes with keeper.lease() */ 3 } => n == 3,
//! };
//! assert!(reconciled && !keeper.is_lost());
//! let token = keeper.lease().token();
//! keeper.release().await?;
//! // Released: the next holder gets a larger fencing token.
//! let next = locks.try_acquire("reconciler", "worker-2", ttl).await?.expect("free");
//! assert!(next.token() > token);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opstore_domain::{Lease, LockManager, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

/// How a [`LeaseKeeper`] renews.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseKeeperConfig {
    /// TTL asked for on every renewal.
    pub ttl: Duration,
    /// Renew after this fraction of the TTL has passed since the last renewal,
    /// strictly between 0 and 1. A third leaves room for two failed attempts.
    pub renew_fraction: f64,
}

impl LeaseKeeperConfig {
    /// Renewals asking for `ttl`, every `renew_fraction` of it.
    pub fn new(ttl: Duration, renew_fraction: f64) -> Self {
        LeaseKeeperConfig {
            ttl,
            renew_fraction,
        }
    }

    fn interval(&self) -> Result<Duration, StoreError> {
        let valid = self.renew_fraction > 0.0 && self.renew_fraction < 1.0;
        if self.ttl.is_zero() || !valid {
            return Err(StoreError::Validation(format!(
                "lease keeper: ttl must be positive and renew_fraction strictly between 0 and 1 (got {:?} and {})",
                self.ttl, self.renew_fraction
            )));
        }
        Ok(self
            .ttl
            .mul_f64(self.renew_fraction)
            .max(Duration::from_millis(1)))
    }
}

/// Holds a lease: renews it in the background and fires a cancellation token
/// when it can no longer be kept.
///
/// The token fires when a renewal fails with `LockLost` (the lease expired or
/// was taken over), when renewals keep failing until the lease would have
/// expired (judged from the last successful renewal on the local monotonic
/// clock), on [`release`](Self::release) and when the keeper is dropped. Start
/// the keeper right after acquiring the lease: its first expiry estimate
/// counts from then.
pub struct LeaseKeeper {
    name: String,
    locks: Arc<dyn LockManager>,
    latest: watch::Receiver<Lease>,
    token: CancellationToken,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("lease", &*self.latest.borrow())
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// Starts renewing `lease` on a background task. `Validation` error for a
    /// zero TTL or a fraction outside (0, 1).
    pub fn start(
        lease: Lease,
        locks: Arc<dyn LockManager>,
        config: LeaseKeeperConfig,
    ) -> Result<Self, StoreError> {
        let interval = config.interval()?;
        let name = lease.name().to_owned();
        let (latest_tx, latest) = watch::channel(lease);
        let token = CancellationToken::new();
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let renewal = Renewal {
            locks: Arc::clone(&locks),
            latest: latest_tx,
            token: token.clone(),
            lost: Arc::clone(&lost),
            stop: stop.clone(),
            ttl: config.ttl,
            interval,
        };
        let span = tracing::debug_span!("lease_keeper", lease = %name);
        let task = tokio::spawn(renewal.run().instrument(span));
        Ok(LeaseKeeper {
            name,
            locks,
            latest,
            token,
            lost,
            stop,
            task: Some(task),
        })
    }

    /// The latest lease (its fencing token and expiry as of the last renewal).
    pub fn lease(&self) -> Lease {
        self.latest.borrow().clone()
    }

    /// Fires when the lease is lost, released or the keeper dropped; hand it
    /// to the work the lease guards.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Whether the lease was lost (as opposed to released).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Stops renewing and releases the lease. Fails with `LockLost` when it was
    /// no longer ours. The cancellation token fires either way.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // The renewal task ends at its next await; a renewal in flight may
            // finish first, and `latest` then holds its result.
            if let Err(e) = task.await {
                warn!(lease = %self.name, error = %e, "lease renewal task failed");
            }
        }
        let lease = self.lease();
        let result = self.locks.release(&lease).await;
        self.token.cancel();
        match &result {
            Ok(()) => debug!(lease = %self.name, "lease released"),
            Err(e) => warn!(lease = %self.name, error = %e, "lease release failed"),
        }
        result
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
        self.token.cancel();
    }
}

struct Renewal {
    locks: Arc<dyn LockManager>,
    latest: watch::Sender<Lease>,
    token: CancellationToken,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    ttl: Duration,
    interval: Duration,
}

impl Renewal {
    async fn run(self) {
        let started = Instant::now();
        let mut expires = started + self.ttl;
        let mut next = started + self.interval;
        let retry = (self.interval / 4).max(Duration::from_millis(1));
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(expires) => {
                    return self.lose("renewals kept failing until the lease expired");
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            let attempt = Instant::now();
            let current = self.latest.borrow().clone();
            let renewed = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(expires) => {
                    return self.lose("a renewal did not finish before the lease expired");
                }
                renewed = self.locks.renew(&current, self.ttl) => renewed,
            };
            match renewed {
                Ok(lease) => {
                    debug!(token = lease.token(), "lease renewed");
                    self.latest.send_replace(lease);
                    expires = attempt + self.ttl;
                    next = attempt + self.interval;
                }
                Err(e) if e.is_lock_lost() => {
                    return self.lose(&e.to_string());
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed; retrying");
                    next = Instant::now() + retry;
                }
            }
        }
    }

    fn lose(&self, reason: &str) {
        let lease = self.latest.borrow().clone();
        warn!(
            lease = lease.name(),
            owner = lease.owner(),
            token = lease.token(),
            reason,
            "lease lost; cancelling the work it guards"
        );
        self.lost.store(true, Ordering::Release);
        self.token.cancel();
    }
}

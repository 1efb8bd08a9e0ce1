//! Leases with fencing, idempotency keys and processor checkpoints.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::ports::feed::ResumeToken;
use crate::time::Timestamp;

/// A held lease. Only a [`LockManager`] hands one out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    name: String,
    owner: String,
    token: u64,
    expires_at: Timestamp,
}

impl Lease {
    /// Built by lock-manager adapters when they grant or renew a lease.
    pub fn granted(name: String, owner: String, token: u64, expires_at: Timestamp) -> Self {
        Lease {
            name,
            owner,
            token,
            expires_at,
        }
    }
    /// Lease name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Holder.
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// Fencing token: strictly greater than every earlier acquisition of this name.
    pub fn token(&self) -> u64 {
        self.token
    }
    /// When the lease lapses unless renewed (backend clock).
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
}

/// Leases with TTL and fencing tokens.
///
/// Contract: at most one live holder per name; `try_acquire` returns `None` while
/// another owner holds a live lease and takes over an expired one; every
/// acquisition gets a fencing token greater than all earlier ones for that name;
/// `renew` and `release` by a holder whose lease expired or was taken over fail with
/// `LockLost`. Expiry is judged by the backend's clock.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait LockManager: Send + Sync {
    /// Takes the lease if free or expired.
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Extends a live lease; `LockLost` if it is no longer ours.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;
    /// Gives the lease up; `LockLost` if it is no longer ours.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// Checks that `lease` is still the live holder; `LockLost` otherwise.
    async fn check(&self, lease: &Lease) -> Result<()>;
    /// The live lease on `name`, if any.
    async fn current(&self, name: &str) -> Result<Option<Lease>>;
    /// Every live lease.
    async fn list(&self) -> Result<Vec<Lease>>;
    /// Operator override: drops the lease whoever holds it. Returns whether one was live.
    async fn force_release(&self, name: &str) -> Result<bool>;
}

/// Outcome of [`IdempotencyStore::begin`].
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// First sight of the key: the caller does the work, then `complete`s.
    Started,
    /// Another caller started and has not finished.
    InProgress,
    /// Done before; here is the stored response.
    Completed(Value),
    /// The key was used with a different request fingerprint.
    Mismatch,
}

/// Idempotency keys.
///
/// Contract: `begin` is atomic per key; records expire after their TTL and then
/// count as absent; `complete` of an unknown or expired key is `NotFound`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the key for a request with this fingerprint.
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin>;
    /// Stores the response of a started request.
    async fn complete(&self, key: &str, response: Value) -> Result<()>;
    /// Forgets a started request so it may be retried. Returns whether it existed.
    async fn abandon(&self, key: &str) -> Result<bool>;
    /// Deletes expired records and returns how many.
    async fn purge_expired(&self) -> Result<u64>;
}

/// Durable resume tokens of named processors.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Stores (overwrites) the checkpoint of `processor`.
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()>;
    /// The stored checkpoint.
    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>>;
    /// Removes it. Returns whether one existed.
    async fn delete(&self, processor: &str) -> Result<bool>;
}

//! Leases, idempotency keys and checkpoints, judged by the store's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::schema::check_name;
use opstore_domain::{
    Begin, CheckpointStore, Clock, IdempotencyStore, Lease, LockManager, Result, ResumeToken,
    StoreError, Timestamp, Value,
};

use crate::error::poisoned;

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| poisoned())
}

fn check_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(StoreError::Validation(format!(
            "{what}: ttl must be greater than zero"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct LeaseRow {
    owner: String,
    /// Last fencing token handed out for this name; survives release.
    token: u64,
    /// `None` once released.
    expires_at: Option<Timestamp>,
}

impl LeaseRow {
    fn live(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|t| t > now)
    }
}

/// Leases in process.
#[derive(Debug)]
pub(crate) struct MemoryLocks {
    rows: Mutex<HashMap<String, LeaseRow>>,
    clock: Arc<dyn Clock>,
}

impl MemoryLocks {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryLocks {
            rows: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// `LockLost` unless `lease` is the live holder.
    pub fn check_held(&self, lease: &Lease) -> Result<()> {
        let rows = lock(&self.rows)?;
        let now = self.clock.now();
        match rows.get(lease.name()) {
            Some(r) if r.live(now) && r.owner == lease.owner() && r.token == lease.token() => {
                Ok(())
            }
            _ => Err(lost(lease)),
        }
    }

    fn lease(name: &str, row: &LeaseRow) -> Option<Lease> {
        Some(Lease::granted(
            name.to_owned(),
            row.owner.clone(),
            row.token,
            row.expires_at?,
        ))
    }
}

fn lost(lease: &Lease) -> StoreError {
    StoreError::LockLost(format!(
        "lease `{}` (token {}) of `{}` expired or was taken over",
        lease.name(),
        lease.token(),
        lease.owner()
    ))
}

#[async_trait]
impl LockManager for MemoryLocks {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        check_name("lease owner", owner)?;
        check_ttl("try_acquire", ttl)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        let row = rows.entry(name.to_owned()).or_insert(LeaseRow {
            owner: String::new(),
            token: 0,
            expires_at: None,
        });
        if row.live(now) && row.owner != owner {
            return Ok(None);
        }
        row.owner = owner.to_owned();
        row.token += 1;
        row.expires_at = Some(now.add(ttl));
        Ok(Self::lease(name, row))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        check_ttl("renew", ttl)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        match rows.get_mut(lease.name()) {
            Some(r) if r.live(now) && r.owner == lease.owner() && r.token == lease.token() => {
                r.expires_at = Some(now.add(ttl));
                Self::lease(lease.name(), r).ok_or_else(|| lost(lease))
            }
            _ => Err(lost(lease)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        match rows.get_mut(lease.name()) {
            Some(r) if r.live(now) && r.owner == lease.owner() && r.token == lease.token() => {
                r.expires_at = None;
                Ok(())
            }
            _ => Err(lost(lease)),
        }
    }

    async fn check(&self, lease: &Lease) -> Result<()> {
        self.check_held(lease)
    }

    async fn current(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        let rows = lock(&self.rows)?;
        let now = self.clock.now();
        Ok(rows
            .get(name)
            .filter(|r| r.live(now))
            .and_then(|r| Self::lease(name, r)))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let rows = lock(&self.rows)?;
        let now = self.clock.now();
        let mut out: Vec<Lease> = rows
            .iter()
            .filter(|(_, r)| r.live(now))
            .filter_map(|(n, r)| Self::lease(n, r))
            .collect();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        check_name("lease", name)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        Ok(match rows.get_mut(name) {
            Some(r) if r.live(now) => {
                r.expires_at = None;
                true
            }
            _ => false,
        })
    }
}

#[derive(Debug)]
struct IdemRow {
    fingerprint: String,
    response: Option<Value>,
    expires_at: Timestamp,
}

/// Idempotency keys in process.
#[derive(Debug)]
pub(crate) struct MemoryIdempotency {
    rows: Mutex<HashMap<String, IdemRow>>,
    clock: Arc<dyn Clock>,
}

impl MemoryIdempotency {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryIdempotency {
            rows: Mutex::new(HashMap::new()),
            clock,
        }
    }
}

fn check_idem_key(key: &str) -> Result<()> {
    opstore_domain::schema::check_key("idempotency keys", key)
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin> {
        check_idem_key(key)?;
        check_ttl("idempotency begin", ttl)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        if let Some(row) = rows.get(key).filter(|r| r.expires_at > now) {
            return Ok(match (&row.response, row.fingerprint == fingerprint) {
                (_, false) => Begin::Mismatch,
                (Some(resp), true) => Begin::Completed(resp.clone()),
                (None, true) => Begin::InProgress,
            });
        }
        rows.insert(
            key.to_owned(),
            IdemRow {
                fingerprint: fingerprint.to_owned(),
                response: None,
                expires_at: now.add(ttl),
            },
        );
        Ok(Begin::Started)
    }

    async fn complete(&self, key: &str, response: Value) -> Result<()> {
        check_idem_key(key)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        match rows.get_mut(key).filter(|r| r.expires_at > now) {
            Some(row) => {
                row.response = Some(response);
                Ok(())
            }
            None => Err(StoreError::NotFound(format!(
                "idempotency key `{key}` was never begun or has expired"
            ))),
        }
    }

    async fn abandon(&self, key: &str) -> Result<bool> {
        check_idem_key(key)?;
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        Ok(rows.remove(key).is_some_and(|r| r.expires_at > now))
    }

    async fn purge_expired(&self) -> Result<u64> {
        let mut rows = lock(&self.rows)?;
        let now = self.clock.now();
        let before = rows.len();
        rows.retain(|_, r| r.expires_at > now);
        Ok((before - rows.len()) as u64)
    }
}

/// Checkpoints in process.
#[derive(Debug, Default)]
pub(crate) struct MemoryCheckpoints {
    rows: Mutex<HashMap<String, ResumeToken>>,
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()> {
        check_name("processor", processor)?;
        lock(&self.rows)?.insert(processor.to_owned(), token.clone());
        Ok(())
    }

    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>> {
        check_name("processor", processor)?;
        Ok(lock(&self.rows)?.get(processor).cloned())
    }

    async fn delete(&self, processor: &str) -> Result<bool> {
        check_name("processor", processor)?;
        Ok(lock(&self.rows)?.remove(processor).is_some())
    }
}

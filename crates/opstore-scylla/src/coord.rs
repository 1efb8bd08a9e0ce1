//! Leases, idempotency keys and checkpoints on lightweight transactions.

use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::schema::{check_key, check_name};
use opstore_domain::{
    Begin, CheckpointStore, IdempotencyStore, Lease, LockManager, Result, ResumeToken, StoreError,
    Timestamp, Value,
};

use crate::codegen::{CHECKPOINTS, IDEMPOTENCY, LEASES};
use crate::error::{Op, lwt_conflict};
use crate::exec::Exec;
use crate::value::{CqlValue, Row};

mod checkpoint;
mod idempotency;
mod lease;

pub use checkpoint::ScyllaCheckpoints;
pub use idempotency::ScyllaIdempotency;
pub use lease::ScyllaLocks;

/// Compare-and-set rounds before a contended write gives up.
const ATTEMPTS: usize = 16;

fn ttl_secs(what: &str, ttl: Duration) -> Result<i32> {
    if ttl.is_zero() {
        return Err(StoreError::Validation(format!(
            "{what}: ttl must be greater than zero"
        )));
    }
    let secs = ttl.as_micros().div_ceil(1_000_000);
    Ok(i32::try_from(secs).unwrap_or(i32::MAX))
}

fn text(v: &str) -> CqlValue {
    CqlValue::Text(v.to_owned())
}

//! The transaction runner behind `Store::transaction` and the handle its work
//! gets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{
    Collection, Lease, Result, Schema, StoreError, Transaction, TxHandle, TxOptions, TxWork,
};

use crate::collection::PgCollection;
use crate::error::Ctx;
use crate::exec::{self, Exec, Pooled, TxState};
use crate::translate::{Bind, Dialect, Sql};

/// The handle given to transaction work.
pub(crate) struct PgTransaction {
    state: Arc<TxState>,
    dialect: Dialect,
}

#[async_trait]
impl Transaction for PgTransaction {
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(PgCollection::new(
            schema,
            Exec::Tx(Arc::clone(&self.state)),
            self.dialect,
        )))
    }

    async fn check_fence(&self, lease: &Lease) -> Result<()> {
        let mut sql = Sql::new();
        sql.push("SELECT 1 FROM opstore_leases WHERE name = ")
            .push_bind(Bind::Text(lease.name().to_owned()))
            .push(" AND owner = ")
            .push_bind(Bind::Text(lease.owner().to_owned()))
            .push(" AND token = ")
            .push_bind(Bind::Int(i64::try_from(lease.token()).unwrap_or(i64::MAX)))
            .push(" AND expires_at > clock_timestamp() FOR SHARE");
        let ctx = Ctx::new("check fence", "opstore_leases").key(lease.name());
        match Exec::Tx(Arc::clone(&self.state))
            .fetch_optional(ctx, sql)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(StoreError::LockLost(format!(
                "lease `{}` is no longer held by `{}` with token {}",
                lease.name(),
                lease.owner(),
                lease.token()
            ))),
        }
    }
}

/// Runs `work` in a transaction, retrying serialization failures and deadlocks
/// with jittered exponential backoff, at most `options.max_retries` times.
pub(crate) async fn run(
    pooled: &Pooled,
    dialect: Dialect,
    options: TxOptions,
    work: &TxWork<'_>,
) -> Result<()> {
    let mut attempt = 0u32;
    loop {
        let ctx = Ctx::new("transaction", "store");
        let state = exec::begin(pooled, options.isolation, ctx).await?;
        let handle: TxHandle = Arc::new(PgTransaction {
            state: Arc::clone(&state),
            dialect,
        });
        let outcome = work(handle).await;
        let result = match outcome {
            Ok(()) => exec::end(&state, Ctx::new("commit", "transaction"), true).await,
            Err(e) => {
                // A rollback has nothing to report that the work's error does not.
                let _ = exec::end(&state, ctx, false).await;
                Err(e)
            }
        };
        let err = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !state.retry.load(Ordering::SeqCst) {
            return Err(err);
        }
        if attempt >= options.max_retries {
            return Err(StoreError::Conflict(format!(
                "transaction gave up after {} attempts on serialization conflicts: {err}",
                attempt + 1
            )));
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// 5 ms doubling per attempt up to 320 ms, with up to 50% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

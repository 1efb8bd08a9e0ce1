//! Transactions through client sessions.
//!
//! The runner follows the driver's `with_transaction` rules: a
//! `TransientTransactionError` (write conflicts among them) reruns the whole
//! work, up to `TxOptions::max_retries` times, then surfaces as `Conflict`; an
//! `UnknownTransactionCommitResult` retries the commit alone, a bounded number
//! of times. Transactions need a replica set (or sharded cluster); on a
//! standalone server the call is `Unsupported`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use mongodb::ClientSession;
use mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT;
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use opstore_domain::{
    Collection, Lease, Result, Schema, StoreError, Transaction, TxOptions, TxWork,
};
use tokio::sync::Mutex;

use crate::collection::MongoCollection;
use crate::ctx::{Ctx, TxState};
use crate::error;

/// Commits retried after an unknown commit result.
const COMMIT_RETRIES: u32 = 3;

/// Commits, retrying an unknown commit result a bounded number of times.
pub(crate) async fn commit(session: &mut ClientSession) -> mongodb::error::Result<()> {
    let mut attempt = 0;
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempt < COMMIT_RETRIES =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

struct MongoTx {
    ctx: Arc<Ctx>,
    state: Arc<TxState>,
}

#[async_trait]
impl Transaction for MongoTx {
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(MongoCollection::new(
            Arc::clone(&self.ctx),
            schema,
            Some(Arc::clone(&self.state)),
        )))
    }

    /// Reads the lease and bumps its fence counter inside the transaction, so a
    /// takeover committed before this transaction commits makes it conflict.
    async fn check_fence(&self, lease: &Lease) -> Result<()> {
        crate::coord::fence_in(&self.ctx, &self.state, lease).await
    }
}

/// Runs `work` in a transaction with bounded retries.
pub(crate) async fn run(ctx: &Arc<Ctx>, options: TxOptions, work: &TxWork<'_>) -> Result<()> {
    if !ctx.replica_set {
        return Err(StoreError::Unsupported(
            "transactions need a MongoDB replica set or sharded cluster; this server is standalone \
             (start mongod with --replSet and run rs.initiate())"
                .into(),
        ));
    }
    let mut attempt = 0;
    loop {
        let state = begin(ctx, "transaction").await?;
        let handle = Arc::new(MongoTx {
            ctx: Arc::clone(ctx),
            state: Arc::clone(&state),
        });
        let outcome = work(handle).await;
        let retry = match end(&state, outcome, "transaction").await? {
            Ended::Done(()) => return Ok(()),
            Ended::Retry(e) => e,
        };
        if attempt >= options.max_retries {
            return Err(StoreError::Conflict(format!(
                "transaction: write conflict persisted after {} retries: {retry}",
                options.max_retries
            )));
        }
        attempt += 1;
        tracing::debug!(
            attempt,
            "retrying MongoDB transaction after a transient error"
        );
    }
}

/// Runs `work` on a collection bound to a transaction of its own, so that a
/// write of several documents is all or nothing; reruns it after a transient
/// error like [`run`] does. The caller checks that the server has transactions.
pub(crate) async fn atomically<T, F, Fut>(
    ctx: &Arc<Ctx>,
    schema: &'static Schema,
    what: &str,
    work: F,
) -> Result<T>
where
    F: Fn(MongoCollection) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // Contended documents make concurrent transactions abort each other; reruns
    // back off with jitter and go on until the operation timeout.
    let deadline = std::time::Instant::now() + ctx.config.operation_timeout;
    let mut attempt: u32 = 0;
    loop {
        let state = begin(ctx, what).await?;
        let outcome = work(MongoCollection::new(
            Arc::clone(ctx),
            schema,
            Some(Arc::clone(&state)),
        ))
        .await;
        let retry = match end(&state, outcome, what).await? {
            Ended::Done(value) => return Ok(value),
            Ended::Retry(e) => e,
        };
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Conflict(format!(
                "{what}: write conflict persisted after {attempt} retries: {retry}"
            )));
        }
        attempt += 1;
        tracing::debug!(
            attempt,
            "{what}: retrying after a transient transaction error"
        );
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// Starts a session and in it a snapshot transaction acknowledged by a majority.
async fn begin(ctx: &Ctx, what: &str) -> Result<Arc<TxState>> {
    let mut session = ctx
        .client
        .start_session()
        .await
        .map_err(|e| error::map(&format!("{what}: start session"), e))?;
    let mut majority = WriteConcern::default();
    majority.w = Some(Acknowledgment::Majority);
    session
        .start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(majority)
        .await
        .map_err(|e| error::map(&format!("{what}: start transaction"), e))?;
    Ok(Arc::new(TxState {
        session: Mutex::new(session),
        transient: AtomicBool::new(false),
    }))
}

/// How one attempt of a transaction ended.
enum Ended<T> {
    /// Committed with this value.
    Done(T),
    /// Failed on a transient error: the caller may run it again.
    Retry(StoreError),
}

/// Commits after `outcome` succeeded or aborts after it failed. An error that no
/// rerun can cure is returned as is.
async fn end<T>(state: &TxState, outcome: Result<T>, what: &str) -> Result<Ended<T>> {
    let mut session = state.session.lock().await;
    match outcome {
        Ok(value) => match commit(&mut session).await {
            Ok(()) => Ok(Ended::Done(value)),
            Err(e) if error::is_transient_tx(&e) => {
                Ok(Ended::Retry(error::map(&format!("{what}: commit"), e)))
            }
            Err(e) => Err(error::map(&format!("{what}: commit"), e)),
        },
        Err(e) => {
            let _ = session.abort_transaction().await;
            if state.transient.load(Ordering::SeqCst) {
                Ok(Ended::Retry(e))
            } else {
                Err(e)
            }
        }
    }
}

/// A pause before rerun `attempt`: exponential from 1 ms up to 64 ms, with the
/// upper half jittered so concurrent writers spread out.
fn backoff(attempt: u32) -> std::time::Duration {
    let base_micros = 1_000u64 << attempt.min(6);
    let jitter = rand::random_range(0..=base_micros / 2);
    std::time::Duration::from_micros(base_micros / 2 + jitter)
}

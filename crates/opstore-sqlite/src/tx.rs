//! The transaction runner behind `Store::transaction` and the handle its work
//! gets.
//!
//! A transaction holds the store's writer connection and SQLite's write lock
//! (`BEGIN IMMEDIATE`) from its start: it is serializable, sees no concurrent
//! writer and never meets a write conflict, so nothing is ever retried.

use std::sync::Arc;

use async_trait::async_trait;
use opstore_domain::{
    Collection, Lease, Result, Schema, StoreError, Transaction, TxHandle, TxOptions, TxWork,
};
use tokio::sync::Mutex;

use crate::collection::SqliteCollection;
use crate::coord::fence_sql;
use crate::error::Ctx;
use crate::exec::{Exec, Shared, TxState};

/// The handle given to transaction work.
pub(crate) struct SqliteTransaction {
    exec: Exec,
}

#[async_trait]
impl Transaction for SqliteTransaction {
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(SqliteCollection::new(schema, self.exec.clone())))
    }

    async fn check_fence(&self, lease: &Lease) -> Result<()> {
        let sql = fence_sql(&self.exec, lease);
        let ctx = Ctx::new("check fence", "opstore_leases").key(lease.name());
        // The transaction holds the write lock until it ends, so the lease
        // cannot change hands between this check and the commit.
        match self.exec.fetch_optional(ctx, sql).await? {
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

/// Runs `work` in one write transaction; its writes commit together or not
/// at all. `options` has nothing to choose on SQLite: every transaction is
/// serializable and none conflicts.
pub(crate) async fn run(shared: &Arc<Shared>, options: TxOptions, work: &TxWork<'_>) -> Result<()> {
    let _ = options;
    let ctx = Ctx::new("transaction", "store");
    let mut writer = shared.lock_writer(ctx).await?;
    writer.begin(ctx).await?;
    let state = Arc::new(TxState {
        conn: Arc::new(Mutex::new(Some(writer))),
        shared: Arc::clone(shared),
    });
    let handle: TxHandle = Arc::new(SqliteTransaction {
        exec: Exec::Tx(Arc::clone(shared), Arc::clone(&state)),
    });
    let outcome = work(handle).await;
    let writer = state.conn.lock().await.take();
    match (outcome, writer) {
        (Ok(()), Some(mut w)) => {
            w.end(Ctx::new("commit", "transaction"), true).await?;
            shared.wake.notify_waiters();
            Ok(())
        }
        (Ok(()), None) => Err(StoreError::Backend {
            message: "transaction handle lost".into(),
            source: None,
        }),
        (Err(e), Some(mut w)) => {
            // A failed rollback leaves the connection marked open: the next write retries it.
            let _ = w.end(ctx, false).await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

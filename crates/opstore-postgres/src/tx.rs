//! Where statements run (the pool or an open transaction), and the transaction
//! runner behind `Store::transaction`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{
    Collection, Isolation, Lease, Result, Schema, StoreError, Transaction, TxHandle, TxOptions,
    TxWork,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Postgres};

use crate::collection::PgCollection;
use crate::error::{Ctx, is_retryable, map};
use crate::translate::{Bind, Dialect, Sql};

type PgQuery = sqlx::query::Query<'static, Postgres, PgArguments>;

/// Turns SQL text and binds into a driver query.
pub(crate) fn build(sql: Sql) -> PgQuery {
    let mut q = sqlx::query(AssertSqlSafe(sql.text));
    for b in sql.binds {
        q = match b {
            Bind::Text(v) => q.bind(v),
            Bind::Int(v) => q.bind(v),
            Bind::Float(v) => q.bind(v),
            Bind::Bool(v) => q.bind(v),
            Bind::Ts(v) => q.bind(v),
            Bind::Json(v) => q.bind(v),
            Bind::TextArr(v) => q.bind(v),
            Bind::IntArr(v) => q.bind(v),
            Bind::FloatArr(v) => q.bind(v),
            Bind::BoolArr(v) => q.bind(v),
            Bind::TsArr(v) => q.bind(v),
            Bind::JsonArr(v) => q.bind(v),
            Bind::Bytes(v) => q.bind(v),
        };
    }
    q
}

/// An open transaction shared by the collections bound to it.
pub(crate) struct TxState {
    conn: tokio::sync::Mutex<Option<sqlx::Transaction<'static, Postgres>>>,
    /// Set when a statement hit a serialization failure or deadlock, so the
    /// runner retries whatever the work returned.
    retry: AtomicBool,
}

/// Where a statement runs.
#[derive(Clone)]
pub(crate) enum Exec {
    Pool(PgPool),
    Tx(Arc<TxState>),
}

macro_rules! run {
    ($self:expr, $ctx:expr, $sql:expr, $method:ident) => {{
        let q = build($sql);
        match $self {
            Exec::Pool(pool) => q.$method(pool).await.map_err(|e| map($ctx, e)),
            Exec::Tx(state) => {
                let mut guard = state.conn.lock().await;
                let Some(tx) = guard.as_mut() else {
                    return Err(StoreError::Conflict(format!(
                        "{} on `{}`: the transaction has already finished",
                        $ctx.op, $ctx.target
                    )));
                };
                q.$method(&mut **tx).await.map_err(|e| {
                    if is_retryable(&e) {
                        state.retry.store(true, Ordering::SeqCst);
                    }
                    map($ctx, e)
                })
            }
        }
    }};
}

impl Exec {
    pub(crate) async fn fetch_all(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<PgRow>> {
        run!(self, ctx, sql, fetch_all)
    }
    pub(crate) async fn fetch_optional(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Option<PgRow>> {
        run!(self, ctx, sql, fetch_optional)
    }
    pub(crate) async fn fetch_one(&self, ctx: Ctx<'_>, sql: Sql) -> Result<PgRow> {
        run!(self, ctx, sql, fetch_one)
    }
    pub(crate) async fn execute(&self, ctx: Ctx<'_>, sql: Sql) -> Result<u64> {
        run!(self, ctx, sql, execute).map(|r| r.rows_affected())
    }
}

/// Begins a READ COMMITTED transaction of the adapter's own, for a collection
/// call that runs several statements that must commit together.
pub(crate) async fn begin_own(pool: &PgPool, ctx: Ctx<'_>) -> Result<Arc<TxState>> {
    // Begun in a task of its own, as in [`run`], so a caller dropped while
    // BEGIN is in flight never hands the connection back inside a transaction.
    let begin = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.begin_with(begin_statement(Isolation::ReadCommitted))
                .await
        })
    };
    let tx = begin
        .await
        .map_err(|e| {
            StoreError::backend(
                format!(
                    "{} on `{}`: the task beginning its transaction failed",
                    ctx.op, ctx.target
                ),
                e,
            )
        })?
        .map_err(|e| map(ctx, e))?;
    Ok(Arc::new(TxState {
        conn: tokio::sync::Mutex::new(Some(tx)),
        retry: AtomicBool::new(false),
    }))
}

/// Ends a transaction begun by [`begin_own`]: commits when `commit`, else
/// rolls back.
pub(crate) async fn end_own(state: &TxState, ctx: Ctx<'_>, commit: bool) -> Result<()> {
    let Some(tx) = state.conn.lock().await.take() else {
        return Err(StoreError::Backend {
            message: format!("{} on `{}`: transaction handle lost", ctx.op, ctx.target),
            source: None,
        });
    };
    if commit {
        tx.commit().await.map_err(|e| map(ctx, e))
    } else {
        // Rollback failures leave nothing to undo: the connection is discarded.
        let _ = tx.rollback().await;
        Ok(())
    }
}

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

fn begin_statement(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
        Isolation::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
    }
}

/// Runs `work` in a transaction, retrying serialization failures and deadlocks
/// with jittered exponential backoff, at most `options.max_retries` times.
pub(crate) async fn run(
    pool: &PgPool,
    dialect: Dialect,
    options: TxOptions,
    work: &TxWork<'_>,
) -> Result<()> {
    let mut attempt = 0u32;
    loop {
        let ctx = Ctx::new("transaction", "store");
        // sqlx counts a transaction as open only once BEGIN is acknowledged, so a
        // caller dropped while BEGIN is in flight would hand the connection back
        // inside an open transaction. Beginning in a task of its own always ends
        // with a transaction that is used, or rolled back when dropped.
        let begin = {
            let pool = pool.clone();
            let statement = begin_statement(options.isolation);
            tokio::spawn(async move { pool.begin_with(statement).await })
        };
        let tx = begin
            .await
            .map_err(|e| StoreError::backend("transaction: the task beginning it failed", e))?
            .map_err(|e| map(ctx, e))?;
        let state = Arc::new(TxState {
            conn: tokio::sync::Mutex::new(Some(tx)),
            retry: AtomicBool::new(false),
        });
        let handle: TxHandle = Arc::new(PgTransaction {
            state: Arc::clone(&state),
            dialect,
        });
        let outcome = work(handle).await;
        let tx = state.conn.lock().await.take();
        let result = match (outcome, tx) {
            (Ok(()), Some(tx)) => match tx.commit().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if is_retryable(&e) {
                        state.retry.store(true, Ordering::SeqCst);
                    }
                    Err(map(Ctx::new("commit", "transaction"), e))
                }
            },
            (Ok(()), None) => Err(StoreError::Backend {
                message: "transaction handle lost".into(),
                source: None,
            }),
            (Err(e), Some(tx)) => {
                // Rollback failures leave nothing to undo: the connection is discarded.
                let _ = tx.rollback().await;
                Err(e)
            }
            (Err(e), None) => Err(e),
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

//! Where statements run: the pool or an open transaction. Every statement of
//! the adapter goes through [`Exec`], which maps driver errors to `StoreError`
//! and marks a transaction for retry on serialization failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opstore_domain::{Isolation, Result, StoreError};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Postgres};

use crate::error::{Ctx, is_retryable, map, pool_timeout};
use crate::translate::{Bind, Sql};

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
    pub(crate) conn: tokio::sync::Mutex<Option<sqlx::Transaction<'static, Postgres>>>,
    /// Set when a statement hit a serialization failure or deadlock, so the
    /// runner retries whatever the work returned.
    pub(crate) retry: AtomicBool,
}

impl TxState {
    /// The state of a transaction that has just begun.
    pub(crate) fn new(tx: sqlx::Transaction<'static, Postgres>) -> Arc<TxState> {
        Arc::new(TxState {
            conn: tokio::sync::Mutex::new(Some(tx)),
            retry: AtomicBool::new(false),
        })
    }
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
            Exec::Pool(pool) => match q.$method(pool).await {
                Err(sqlx::Error::PoolTimedOut) => {
                    Err(pool_timeout($ctx, &pool.connect_options()).await)
                }
                other => other.map_err(|e| map($ctx, e)),
            },
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
    // Begun in a task of its own, as in `tx::run`, so a caller dropped while
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
    Ok(TxState::new(tx))
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

/// The `BEGIN` statement of an isolation level.
pub(crate) fn begin_statement(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
        Isolation::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
    }
}

//! Where statements run: the pool or an open transaction. Every statement of
//! the adapter goes through [`Exec`], which bounds it by the call timeout, maps
//! driver errors to `StoreError` and marks a transaction for retry on
//! serialization failures.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opstore_domain::{Isolation, Result, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres};

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

/// The client-side limit of one call to the server (`PgConfig::call_timeout`):
/// a server that stops answering without closing the connection would otherwise
/// hold the caller for as long as the operating system keeps the socket open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Option<Duration>);

impl Deadline {
    /// The output of `fut`, or `None` when the limit ran out first (`fut` is
    /// dropped).
    pub(crate) async fn within<F: Future>(self, fut: F) -> Option<F::Output> {
        match self.0 {
            None => Some(fut.await),
            Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        }
    }

    /// The error of a call the limit cut off; `after` says what became of it.
    pub(crate) fn expired(self, ctx: Ctx<'_>, after: &str) -> StoreError {
        StoreError::Timeout(format!(
            "{}: PostgreSQL did not answer within the call timeout of {:?}; {after}",
            ctx.describe(),
            self.0.unwrap_or_default()
        ))
    }
}

/// The pool, with the limit of each call made on it.
#[derive(Clone)]
pub(crate) struct Pooled {
    pub(crate) pool: PgPool,
    pub(crate) deadline: Deadline,
}

impl Pooled {
    /// A connection of the pool.
    pub(crate) async fn acquire(&self, ctx: Ctx<'_>) -> Result<PoolConnection<Postgres>> {
        match self.pool.acquire().await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(self.error(ctx, e).await),
        }
    }

    /// Runs `work` on a connection of the pool within the call timeout. A
    /// connection the limit cuts off mid-call is closed, never handed to another
    /// caller; `after` says so in the error.
    pub(crate) async fn on_conn<T>(
        &self,
        ctx: Ctx<'_>,
        after: &str,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.acquire(ctx).await?;
        match self.deadline.within(work(&mut conn)).await {
            Some(out) => out,
            None => {
                conn.close_on_drop();
                Err(self.deadline.expired(ctx, after))
            }
        }
    }

    /// A driver error of a call on the pool. When no connection came within the
    /// acquire timeout, it says whether the pool was busy or the server
    /// unreachable.
    async fn error(&self, ctx: Ctx<'_>, e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolTimedOut => pool_timeout(ctx, &self.pool.connect_options()).await,
            e => map(ctx, e),
        }
    }
}

/// An open transaction shared by the collections bound to it.
pub(crate) struct TxState {
    pub(crate) conn: tokio::sync::Mutex<Option<sqlx::Transaction<'static, Postgres>>>,
    /// Set when a statement hit a serialization failure or deadlock, so the
    /// runner retries whatever the work returned.
    pub(crate) retry: AtomicBool,
    pub(crate) deadline: Deadline,
}

/// Where a statement runs.
#[derive(Clone)]
pub(crate) enum Exec {
    Pool(Pooled),
    Tx(Arc<TxState>),
}

macro_rules! run {
    ($self:expr, $ctx:expr, $sql:expr, $method:ident) => {{
        let q = build($sql);
        match $self {
            Exec::Pool(pooled) => {
                pooled
                    .on_conn($ctx, "its connection was closed", async |conn| {
                        q.$method(conn).await.map_err(|e| map($ctx, e))
                    })
                    .await
            }
            Exec::Tx(state) => {
                let mut guard = state.conn.lock().await;
                let Some(tx) = guard.as_mut() else {
                    return Err(StoreError::Conflict(format!(
                        "{} on `{}`: the transaction has already finished",
                        $ctx.op, $ctx.target
                    )));
                };
                match state.deadline.within(q.$method(&mut **tx)).await {
                    Some(out) => out.map_err(|e| {
                        if is_retryable(&e) {
                            state.retry.store(true, Ordering::SeqCst);
                        }
                        map($ctx, e)
                    }),
                    None => {
                        // Abandoned: later statements of the work fail, and the
                        // server rolls the transaction back.
                        guard.take();
                        Err(state
                            .deadline
                            .expired($ctx, "its transaction was abandoned"))
                    }
                }
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

/// Begins a transaction at `isolation` on a connection of `pooled`, bounded by
/// its call timeout.
pub(crate) async fn begin(
    pooled: &Pooled,
    isolation: Isolation,
    ctx: Ctx<'_>,
) -> Result<Arc<TxState>> {
    // sqlx counts a transaction as open only once BEGIN is acknowledged, so a
    // caller dropped while BEGIN is in flight would hand the connection back
    // inside an open transaction. Beginning in a task of its own always ends
    // with a transaction that is used, or rolled back when dropped.
    let begin = {
        let pool = pooled.pool.clone();
        tokio::spawn(async move { pool.begin_with(begin_statement(isolation)).await })
    };
    let Some(joined) = pooled.deadline.within(begin).await else {
        return Err(pooled
            .deadline
            .expired(ctx, "the transaction was not begun"));
    };
    let begun = joined.map_err(|e| {
        StoreError::backend(
            format!(
                "{}: the task beginning its transaction failed",
                ctx.describe()
            ),
            e,
        )
    })?;
    let tx = match begun {
        Ok(tx) => tx,
        Err(e) => return Err(pooled.error(ctx, e).await),
    };
    Ok(Arc::new(TxState {
        conn: tokio::sync::Mutex::new(Some(tx)),
        retry: AtomicBool::new(false),
        deadline: pooled.deadline,
    }))
}

/// Ends a transaction begun by [`begin`]: commits when `commit`, else rolls
/// back. A commit the call timeout cuts off is `Timeout` with an unknown outcome.
pub(crate) async fn end(state: &TxState, ctx: Ctx<'_>, commit: bool) -> Result<()> {
    let Some(tx) = state.conn.lock().await.take() else {
        return Err(StoreError::Backend {
            message: format!("{}: transaction handle lost", ctx.describe()),
            source: None,
        });
    };
    if !commit {
        // Rollback failures leave nothing to undo: the server rolls back when the
        // connection ends.
        let _ = state.deadline.within(tx.rollback()).await;
        return Ok(());
    }
    match state.deadline.within(tx.commit()).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            if is_retryable(&e) {
                state.retry.store(true, Ordering::SeqCst);
            }
            Err(map(ctx, e))
        }
        None => Err(state
            .deadline
            .expired(ctx, "whether the transaction committed is unknown")),
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

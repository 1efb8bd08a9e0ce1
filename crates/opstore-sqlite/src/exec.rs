//! Where statements run: the pool, a write of the adapter's own, or an open
//! transaction. Every statement of the adapter goes through [`Exec`] or a
//! [`Writer`], which map driver errors to `StoreError`.
//!
//! SQLite has one writer per database file. Writes in this process take turns
//! at the store's write gate (a fair queue, so no statement spins in SQLite's
//! busy handler), and each write transaction starts with `BEGIN IMMEDIATE`,
//! which takes the file's write lock at once: a second process waits its turn
//! (up to the busy timeout) instead of failing halfway through a transaction.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::{Result, StoreError};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use crate::config::SqliteClock;
use crate::error::{Ctx, map};
use crate::translate::{Bind, Sql};

type SqliteQuery = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// Turns SQL text and binds into a driver query.
pub(crate) fn build(sql: Sql) -> SqliteQuery {
    let mut q = sqlx::query(AssertSqlSafe(sql.text));
    for b in sql.binds {
        q = match b {
            Bind::Text(v) => q.bind(v),
            Bind::Int(v) => q.bind(v),
            Bind::Null => q.bind(None::<String>),
        };
    }
    q
}

/// What the store shares with its ports.
pub(crate) struct Shared {
    pub pool: SqlitePool,
    /// One writer at a time in this process.
    pub gate: Arc<Mutex<()>>,
    pub clock: SqliteClock,
    /// Wakes watchers after a commit of this process.
    pub wake: Notify,
    pub feed_retention: Duration,
    pub feed_poll_interval: Duration,
    /// Longest wait for the write gate (and for another process's lock).
    pub busy_timeout: Duration,
}

/// An open transaction shared by the collections bound to it.
pub(crate) struct TxState {
    pub conn: Arc<Mutex<Option<sqlx::Transaction<'static, Sqlite>>>>,
}

/// Where a statement runs.
#[derive(Clone)]
pub(crate) enum Exec {
    Pool(Arc<Shared>),
    Tx(Arc<Shared>, Arc<TxState>),
}

fn finished(ctx: Ctx<'_>) -> StoreError {
    StoreError::Validation(format!(
        "{}: the transaction has already finished; use the collection of a live transaction",
        ctx.describe()
    ))
}

macro_rules! run {
    ($self:expr, $ctx:expr, $sql:expr, $method:ident) => {{
        let q = build($sql);
        match $self {
            Exec::Pool(shared) => q.$method(&shared.pool).await.map_err(|e| map($ctx, e)),
            Exec::Tx(_, state) => {
                let mut guard = state.conn.lock().await;
                let Some(tx) = guard.as_mut() else {
                    return Err(finished($ctx));
                };
                q.$method(&mut **tx).await.map_err(|e| map($ctx, e))
            }
        }
    }};
}

impl Exec {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        match self {
            Exec::Pool(s) | Exec::Tx(s, _) => s,
        }
    }
    pub(crate) fn clock(&self) -> &SqliteClock {
        &self.shared().clock
    }
    pub(crate) async fn fetch_all(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
        run!(self, ctx, sql, fetch_all)
    }
    pub(crate) async fn fetch_optional(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Option<SqliteRow>> {
        run!(self, ctx, sql, fetch_optional)
    }
    pub(crate) async fn fetch_one(&self, ctx: Ctx<'_>, sql: Sql) -> Result<SqliteRow> {
        run!(self, ctx, sql, fetch_one)
    }

    /// Runs one write statement: under the write gate in autocommit (SQLite
    /// takes and releases the file's write lock around it), or inside the
    /// open transaction. Returns the rows it returns.
    pub(crate) async fn write_rows(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
        match self {
            Exec::Pool(shared) => {
                let _gate = gate(shared, ctx).await?;
                build(sql)
                    .fetch_all(&shared.pool)
                    .await
                    .map_err(|e| map(ctx, e))
            }
            Exec::Tx(..) => self.fetch_all(ctx, sql).await,
        }
    }

    /// Like [`Exec::write_rows`], returning the number of rows changed.
    pub(crate) async fn write_count(&self, ctx: Ctx<'_>, sql: Sql) -> Result<u64> {
        let q = build(sql);
        let done = match self {
            Exec::Pool(shared) => {
                let _gate = gate(shared, ctx).await?;
                q.execute(&shared.pool).await
            }
            Exec::Tx(_, state) => {
                let mut guard = state.conn.lock().await;
                let Some(tx) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                q.execute(&mut **tx).await
            }
        };
        done.map(|r| r.rows_affected()).map_err(|e| map(ctx, e))
    }

    /// Starts a write that commits as a whole: a transaction of its own
    /// (through the write gate), or a savepoint inside the open transaction.
    pub(crate) async fn writer(&self, ctx: Ctx<'_>) -> Result<Writer> {
        match self {
            Exec::Pool(shared) => {
                let gate = gate(shared, ctx).await?;
                // Begun in a task of its own: a caller dropped while BEGIN is in
                // flight must not hand the connection back inside a transaction.
                let pool = shared.pool.clone();
                let tx = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
                    .await
                    .map_err(|e| {
                        StoreError::backend(
                            format!("{}: the task beginning the write failed", ctx.describe()),
                            e,
                        )
                    })?
                    .map_err(|e| map(ctx, e))?;
                Ok(Writer {
                    kind: Kind::Own {
                        tx: Some(tx),
                        _gate: gate,
                        shared: Arc::clone(shared),
                    },
                })
            }
            Exec::Tx(_, state) => {
                let mut guard = Arc::clone(&state.conn).lock_owned().await;
                let Some(tx) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                sqlx::query("SAVEPOINT opstore_write")
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| map(ctx, e))?;
                Ok(Writer {
                    kind: Kind::Nested { guard },
                })
            }
        }
    }
}

/// Waits for this store's write gate, at most the busy timeout.
async fn gate(shared: &Shared, ctx: Ctx<'_>) -> Result<OwnedMutexGuard<()>> {
    tokio::time::timeout(shared.busy_timeout, Arc::clone(&shared.gate).lock_owned())
        .await
        .map_err(|_| {
            StoreError::Timeout(format!(
                "{}: another write of this store held the write lock past the busy timeout \
                 (inside a transaction, use the transaction's collections)",
                ctx.describe()
            ))
        })
}

/// A write in progress; [`Writer::finish`] commits it or undoes it.
pub(crate) struct Writer {
    kind: Kind,
}

enum Kind {
    Own {
        tx: Option<sqlx::Transaction<'static, Sqlite>>,
        _gate: OwnedMutexGuard<()>,
        shared: Arc<Shared>,
    },
    Nested {
        guard: OwnedMutexGuard<Option<sqlx::Transaction<'static, Sqlite>>>,
    },
}

impl Writer {
    fn conn(&mut self, ctx: Ctx<'_>) -> Result<&mut SqliteConnection> {
        let tx = match &mut self.kind {
            Kind::Own { tx, .. } => tx.as_mut(),
            Kind::Nested { guard } => guard.as_mut(),
        };
        tx.map(|t| &mut **t).ok_or_else(|| finished(ctx))
    }

    pub(crate) async fn fetch_all(&mut self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
        build(sql)
            .fetch_all(self.conn(ctx)?)
            .await
            .map_err(|e| map(ctx, e))
    }
    pub(crate) async fn fetch_optional(
        &mut self,
        ctx: Ctx<'_>,
        sql: Sql,
    ) -> Result<Option<SqliteRow>> {
        build(sql)
            .fetch_optional(self.conn(ctx)?)
            .await
            .map_err(|e| map(ctx, e))
    }
    pub(crate) async fn execute(&mut self, ctx: Ctx<'_>, sql: Sql) -> Result<u64> {
        build(sql)
            .execute(self.conn(ctx)?)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| map(ctx, e))
    }

    /// Runs a multi-statement script of trusted text.
    pub(crate) async fn raw(&mut self, ctx: Ctx<'_>, q: sqlx::RawSql) -> Result<()> {
        q.execute(self.conn(ctx)?)
            .await
            .map(drop)
            .map_err(|e| map(ctx, e))
    }

    /// Commits when `result` is `Ok`, else undoes the write; returns `result`
    /// (or the commit's error).
    pub(crate) async fn finish<R>(mut self, ctx: Ctx<'_>, result: Result<R>) -> Result<R> {
        match &mut self.kind {
            Kind::Own { tx, shared, .. } => {
                let Some(tx) = tx.take() else {
                    return Err(finished(ctx));
                };
                match result {
                    Ok(out) => {
                        tx.commit().await.map_err(|e| map(ctx, e))?;
                        shared.wake.notify_waiters();
                        Ok(out)
                    }
                    Err(e) => {
                        // A failed rollback leaves nothing to undo: the connection is discarded.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
            Kind::Nested { guard } => {
                let Some(tx) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                let end = if result.is_ok() {
                    "RELEASE opstore_write"
                } else {
                    "ROLLBACK TO opstore_write; RELEASE opstore_write"
                };
                sqlx::raw_sql(end)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| map(ctx, e))?;
                result
            }
        }
    }
}

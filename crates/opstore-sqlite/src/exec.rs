//! Where statements run: the read pool, the writer connection, or an open
//! transaction. Every statement of the adapter goes through [`Exec`] or a
//! [`Writer`], which map driver errors to `StoreError`.
//!
//! SQLite has one writer per database file, so the store keeps one writer
//! connection of its own behind a fair async mutex (the write gate): writes of
//! this process queue there instead of spinning in SQLite's busy handler, and
//! reads run on the pool beside them (WAL mode). A write transaction starts
//! with `BEGIN IMMEDIATE`, which takes the file's write lock at once, so a
//! second process waits its turn (up to the busy timeout) instead of failing
//! halfway through a transaction.

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

/// The store's one writer connection.
pub(crate) struct WriteConn {
    pub conn: SqliteConnection,
    /// A transaction was begun and not yet ended: set before `BEGIN` is sent,
    /// cleared after `COMMIT` or `ROLLBACK`. A write whose caller went away
    /// halfway leaves it set, and the next write rolls that transaction back
    /// before it begins its own.
    pub open: bool,
    /// Set by `close`: later writes fail with `Connection`.
    pub closed: bool,
}

impl WriteConn {
    /// The connection, after undoing what a cancelled write left open.
    async fn ready(&mut self, ctx: Ctx<'_>) -> Result<&mut SqliteConnection> {
        if self.closed {
            return Err(StoreError::Connection(format!(
                "{}: the store is closed",
                ctx.describe()
            )));
        }
        if self.open {
            // An error here means no transaction was open after all.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await;
            self.open = false;
        }
        Ok(&mut self.conn)
    }

    /// Begins a write transaction.
    pub(crate) async fn begin(&mut self, ctx: Ctx<'_>) -> Result<()> {
        self.ready(ctx).await?;
        self.open = true;
        match sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.open = false;
                Err(map(ctx, e))
            }
        }
    }

    /// Commits (`commit`) or rolls back the open transaction.
    pub(crate) async fn end(&mut self, ctx: Ctx<'_>, commit: bool) -> Result<()> {
        let statement = if commit { "COMMIT" } else { "ROLLBACK" };
        let done = sqlx::raw_sql(statement).execute(&mut self.conn).await;
        if done.is_ok() {
            self.open = false;
        }
        // A failed COMMIT leaves `open` set: the next write rolls it back.
        done.map(drop).map_err(|e| map(ctx, e))
    }
}

/// What the store shares with its ports.
pub(crate) struct Shared {
    /// Connections for reads.
    pub pool: SqlitePool,
    /// The writer connection; its mutex is the write gate.
    pub writer: Arc<Mutex<WriteConn>>,
    pub clock: SqliteClock,
    /// Wakes watchers after a commit of this process.
    pub wake: Notify,
    pub feed_retention: Duration,
    pub feed_poll_interval: Duration,
    /// Longest wait for the write gate (and for another process's lock).
    pub busy_timeout: Duration,
}

impl Shared {
    /// Waits for the writer connection, at most the busy timeout.
    pub(crate) async fn lock_writer(&self, ctx: Ctx<'_>) -> Result<OwnedMutexGuard<WriteConn>> {
        tokio::time::timeout(self.busy_timeout, Arc::clone(&self.writer).lock_owned())
            .await
            .map_err(|_| {
                StoreError::Timeout(format!(
                    "{}: another write of this store held the write lock past the busy timeout \
                     (inside a transaction, use the transaction's collections)",
                    ctx.describe()
                ))
            })
    }
}

/// Rolls back, in a task of its own, a transaction whose caller went away
/// with it open, so the file's write lock does not wait for this store's next
/// write to be released for other processes.
fn roll_back_soon(shared: &Arc<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let writer = Arc::clone(&shared.writer);
    runtime.spawn(async move {
        let mut w = writer.lock().await;
        // `ready` rolls back what is still open; a closed store has nothing to undo.
        let _ = w.ready(Ctx::new("roll back", "abandoned write")).await;
    });
}

/// An open transaction shared by the collections bound to it: the writer
/// connection, until the transaction ends.
pub(crate) struct TxState {
    pub conn: Arc<Mutex<Option<OwnedMutexGuard<WriteConn>>>>,
    pub shared: Arc<Shared>,
}

impl Drop for TxState {
    fn drop(&mut self) {
        // Taking the writer out releases it for the task below.
        let abandoned = self
            .conn
            .try_lock()
            .is_ok_and(|mut g| g.take().is_some_and(|w| w.open));
        if abandoned {
            roll_back_soon(&self.shared);
        }
    }
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
                let Some(w) = guard.as_mut() else {
                    return Err(finished($ctx));
                };
                q.$method(&mut w.conn).await.map_err(|e| map($ctx, e))
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

    /// Runs one write statement: on the writer connection in autocommit
    /// (SQLite takes and releases the file's write lock around it), or inside
    /// the open transaction. Returns the rows it returns.
    pub(crate) async fn write_rows(&self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
        match self {
            Exec::Pool(shared) => {
                let mut w = shared.lock_writer(ctx).await?;
                let conn = w.ready(ctx).await?;
                build(sql).fetch_all(conn).await.map_err(|e| map(ctx, e))
            }
            Exec::Tx(..) => self.fetch_all(ctx, sql).await,
        }
    }

    /// Like [`Exec::write_rows`], returning the number of rows changed.
    pub(crate) async fn write_count(&self, ctx: Ctx<'_>, sql: Sql) -> Result<u64> {
        let q = build(sql);
        let done = match self {
            Exec::Pool(shared) => {
                let mut w = shared.lock_writer(ctx).await?;
                let conn = w.ready(ctx).await?;
                q.execute(conn).await
            }
            Exec::Tx(_, state) => {
                let mut guard = state.conn.lock().await;
                let Some(w) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                q.execute(&mut w.conn).await
            }
        };
        done.map(|r| r.rows_affected()).map_err(|e| map(ctx, e))
    }

    /// Starts a write that commits as a whole: a transaction of its own on the
    /// writer connection, or a savepoint inside the open transaction.
    pub(crate) async fn writer(&self, ctx: Ctx<'_>) -> Result<Writer> {
        match self {
            Exec::Pool(shared) => {
                let mut guard = shared.lock_writer(ctx).await?;
                guard.begin(ctx).await?;
                Ok(Writer {
                    kind: Kind::Own {
                        guard,
                        shared: Arc::clone(shared),
                    },
                    finished: false,
                })
            }
            Exec::Tx(_, state) => {
                let mut guard = Arc::clone(&state.conn).lock_owned().await;
                let Some(w) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                sqlx::raw_sql("SAVEPOINT opstore_write")
                    .execute(&mut w.conn)
                    .await
                    .map_err(|e| map(ctx, e))?;
                Ok(Writer {
                    kind: Kind::Nested { guard },
                    finished: false,
                })
            }
        }
    }
}

/// A write in progress; [`Writer::finish`] commits it or undoes it. Dropped
/// unfinished, its transaction is rolled back in a task of its own (or by the
/// next write, whichever takes the writer first).
pub(crate) struct Writer {
    kind: Kind,
    finished: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let (false, Kind::Own { shared, .. }) = (self.finished, &self.kind) {
            roll_back_soon(shared);
        }
    }
}

enum Kind {
    Own {
        guard: OwnedMutexGuard<WriteConn>,
        shared: Arc<Shared>,
    },
    Nested {
        guard: OwnedMutexGuard<Option<OwnedMutexGuard<WriteConn>>>,
    },
}

impl Writer {
    fn conn(&mut self, ctx: Ctx<'_>) -> Result<&mut SqliteConnection> {
        match &mut self.kind {
            Kind::Own { guard, .. } => Ok(&mut guard.conn),
            Kind::Nested { guard } => guard
                .as_mut()
                .map(|w| &mut w.conn)
                .ok_or_else(|| finished(ctx)),
        }
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
        self.finished = true;
        match &mut self.kind {
            Kind::Own { guard, shared } => match result {
                Ok(out) => {
                    guard.end(ctx, true).await?;
                    shared.wake.notify_waiters();
                    Ok(out)
                }
                Err(e) => {
                    // A failed rollback leaves `open` set: the next write retries it.
                    let _ = guard.end(ctx, false).await;
                    Err(e)
                }
            },
            Kind::Nested { guard } => {
                let Some(w) = guard.as_mut() else {
                    return Err(finished(ctx));
                };
                let end = if result.is_ok() {
                    "RELEASE opstore_write"
                } else {
                    "ROLLBACK TO opstore_write; RELEASE opstore_write"
                };
                sqlx::raw_sql(end)
                    .execute(&mut w.conn)
                    .await
                    .map_err(|e| map(ctx, e))?;
                result
            }
        }
    }
}

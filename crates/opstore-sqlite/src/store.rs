//! `SqliteStore`: opening the file, migrating, and handing out every port.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use opstore_domain::{
    Capabilities, ChangeFeed, CheckpointStore, Collection, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Schema, Store, StoreError, TxOptions, TxWork,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, Notify};

use crate::collection::SqliteCollection;
use crate::config::SqliteConfig;
use crate::coord::{SqliteCheckpoints, SqliteIdempotency, SqliteLocks};
use crate::error::{Ctx, decode, map};
use crate::exec::{Exec, Shared, WriteConn, Writer};
use crate::feed::{SqliteFeed, purge};
use crate::schema::{CORE_DDL, CORE_VERSION, entity_ddl, generated_columns, index_ddl, quote};
use crate::translate::{Bind, Sql};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    config: SqliteConfig,
    /// The file behind `sqlite::memory:`, removed with the store.
    temp_file: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(file) = &self.temp_file {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                // Already gone or never created: nothing to remove.
                let _ = std::fs::remove_file(name);
            }
        }
    }
}

/// A fresh file name in the system's temporary directory.
fn temp_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "opstore-sqlite-memory-{}-{nanos}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating when missing, with its parent directory) the database
    /// file in WAL mode. Tables are created by [`Store::migrate`].
    ///
    /// `sqlite::memory:` opens a private database in a temporary file that is
    /// removed when the store is dropped: SQLite's own in-memory databases
    /// share one cache between connections, where a reader waits for an open
    /// write transaction instead of reading the last commit as WAL readers do.
    pub async fn connect(config: SqliteConfig) -> Result<Self> {
        config.check()?;
        let temp_file = config.is_in_memory().then(temp_path);
        let options = match &temp_file {
            Some(file) => SqliteConnectOptions::new().filename(file),
            None => SqliteConnectOptions::from_str(&config.url).map_err(|e| {
                StoreError::Validation(format!("invalid SQLite URL {}: {e}", config.redacted_url()))
            })?,
        };
        let options = options
            .create_if_missing(true)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(false)
            .synchronous(SqliteSynchronous::Normal)
            .journal_mode(SqliteJournalMode::Wal);
        let file = options.get_filename().to_owned();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Connection(format!(
                    "connect to {}: cannot create the directory {}: {e}",
                    config.redacted_url(),
                    dir.display()
                ))
            })?;
        }
        let pool_options = SqlitePoolOptions::new().max_connections(config.max_connections);
        let target = config.redacted_url();
        let connect_error = |e| match map(Ctx::new("connect", &target), e) {
            StoreError::Backend { message, source } => StoreError::Connection(match source {
                Some(s) => format!("{message}: {s}"),
                None => message,
            }),
            other => other,
        };
        // The writer first: it creates the file and switches it to WAL.
        let writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(connect_error)?;
        let pool = pool_options
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        let shared = Arc::new(Shared {
            pool,
            writer: Arc::new(Mutex::new(WriteConn {
                conn: writer,
                open: false,
                closed: false,
            })),
            clock: config.clock.clone(),
            wake: Notify::new(),
            feed_retention: config.feed_retention,
            feed_poll_interval: config.feed_poll_interval,
            busy_timeout: config.busy_timeout,
        });
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                shared,
                config,
                temp_file,
            }),
        })
    }

    /// The connection pool, for queries of your own on the same tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.shared.pool
    }

    /// The configuration.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// Deletes change history older than the retention; returns the number of
    /// changelog rows removed. Watchers also do this periodically.
    pub async fn purge_feed(&self) -> Result<u64> {
        purge(&self.exec(), self.inner.config.feed_retention).await
    }

    /// Deletes documents whose TTL ran out (they are already invisible to reads).
    pub async fn purge_expired(&self, schema: &'static Schema) -> Result<u64> {
        SqliteCollection::new(schema, self.exec())
            .delete_expired()
            .await
    }

    fn exec(&self) -> Exec {
        Exec::Pool(Arc::clone(&self.inner.shared))
    }

    async fn migrate_in(
        &self,
        w: &mut Writer,
        schemas: &[&'static Schema],
    ) -> Result<MigrationReport> {
        let ctx = Ctx::new("migrate", "opstore_migrations");
        w.script(
            ctx,
            "CREATE TABLE IF NOT EXISTS opstore_migrations (version TEXT PRIMARY KEY NOT NULL, \
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        )
        .await?;
        let mut steps = vec![(CORE_VERSION.to_owned(), CORE_DDL.to_owned(), None)];
        for schema in schemas {
            steps.push((
                format!("entity_{}", schema.name()),
                entity_ddl(schema),
                Some(*schema),
            ));
        }
        let mut report = MigrationReport::default();
        for (version, ddl, schema) in steps {
            let checksum = format!("{:016x}", checksum(&ddl));
            let mut sql = Sql::new();
            let v = sql.bind(Bind::Text(version.clone()));
            sql.push(&format!(
                "SELECT checksum FROM opstore_migrations WHERE version = {v}"
            ));
            let applied: Option<String> = match w.fetch_optional(ctx, sql).await? {
                Some(row) => Some(row.try_get(0).map_err(|e| decode("a migration", e))?),
                None => None,
            };
            if applied.as_deref() == Some(checksum.as_str()) {
                report.unchanged.push(version);
                continue;
            }
            let step = Ctx::new("migrate", &version);
            w.script(step, &ddl).await?;
            if let Some(schema) = schema {
                self.add_columns(w, schema).await?;
            }
            let mut sql = Sql::new();
            let v = sql.bind(Bind::Text(version.clone()));
            let c = sql.bind(Bind::Text(checksum));
            sql.push(&format!(
                "INSERT INTO opstore_migrations (version, checksum) VALUES ({v}, {c}) \
                 ON CONFLICT (version) DO UPDATE SET checksum = excluded.checksum, \
                 applied_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
            ));
            w.execute(ctx, sql).await?;
            report.applied.push(version);
        }
        Ok(report)
    }

    /// Adds the generated columns (and indexes) of fields indexed since the
    /// table was created: `CREATE TABLE IF NOT EXISTS` leaves an old table as it was.
    async fn add_columns(&self, w: &mut Writer, schema: &'static Schema) -> Result<()> {
        let ctx = Ctx::new("migrate", schema.name());
        let mut sql = Sql::new();
        let t = sql.bind(Bind::Text(schema.name().to_owned()));
        sql.push(&format!("SELECT name FROM pragma_table_xinfo({t})"));
        let rows = w.fetch_all(ctx, sql).await?;
        let existing = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| decode("the table's columns", e))?;
        let mut added = false;
        for (name, def) in generated_columns(schema) {
            if existing.contains(&name) {
                continue;
            }
            let stmt = format!("ALTER TABLE {} ADD COLUMN {def}", quote(schema.name()));
            w.script(ctx, &stmt).await?;
            added = true;
        }
        if added {
            for stmt in index_ddl(schema) {
                w.script(ctx, &stmt).await?;
            }
        }
        Ok(())
    }
}

/// FNV-1a over the DDL text, to notice changed definitions.
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Writer {
    /// Runs trusted DDL text (built by this crate from schema declarations).
    pub(crate) async fn script(&mut self, ctx: Ctx<'_>, text: &str) -> Result<()> {
        let text = text.to_owned();
        self.raw(ctx, sqlx::raw_sql(AssertSqlSafe(text))).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: true,
            row_locks: true,
            change_feed: true,
            change_feed_order: "collection",
            sort_any_field: true,
            filter_any_field: true,
            aggregates: true,
            claim: true,
            notes: Vec::new(),
        }
    }

    async fn health(&self) -> Result<HealthReport> {
        let started = Instant::now();
        let row = sqlx::query("SELECT sqlite_version()")
            .fetch_one(&self.inner.shared.pool)
            .await
            .map_err(|e| map(Ctx::new("health", "database"), e))?;
        let version: String = row
            .try_get(0)
            .map_err(|e| decode("the SQLite version", e))?;
        Ok(HealthReport {
            backend: "sqlite",
            server: format!("SQLite {version}"),
            latency: started.elapsed(),
        })
    }

    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport> {
        // One write transaction: concurrent migrations from several processes
        // run one after the other, the later ones finding every step applied.
        let ctx = Ctx::new("migrate", "database");
        let mut w = self.exec().writer(ctx).await?;
        let r = self.migrate_in(&mut w, schemas).await;
        w.finish(ctx, r).await
    }

    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(SqliteCollection::new(schema, self.exec())))
    }

    fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(SqliteFeed { exec: self.exec() })
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::new(SqliteLocks { exec: self.exec() })
    }

    fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(SqliteIdempotency { exec: self.exec() })
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(SqliteCheckpoints { exec: self.exec() })
    }

    async fn transaction<'a>(&self, options: TxOptions, work: &TxWork<'a>) -> Result<()> {
        crate::tx::run(&self.inner.shared, options, work).await
    }

    async fn close(&self) {
        self.inner.shared.writer.lock().await.closed = true;
        self.inner.shared.pool.close().await;
    }
}

//! `PgStore`: connecting, migrating, and handing out every port.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use opstore_domain::{
    Capabilities, ChangeFeed, CheckpointStore, Collection, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Schema, Store, StoreError, TxOptions, TxWork,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};

use crate::collection::PgCollection;
use crate::config::PgConfig;
use crate::coord::{PgCheckpoints, PgIdempotency, PgLocks};
use crate::error::pool_timeout;
use crate::error::{Ctx, map};
use crate::exec::{Deadline, Exec, Pooled};
use crate::feed::{PgFeed, Wake, purge};
use crate::schema::{CORE_DDL, CORE_VERSION, entity_ddl, entity_version, quote};
use crate::translate::{Dialect, Sql};

/// Advisory-lock class of migrations (the second key is the schema's hash).
const MIGRATION_LOCK_CLASS: i32 = 0x6f70_6d67;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    config: PgConfig,
    dialect: Dialect,
    wake: Arc<Wake>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake.stop();
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl PgStore {
    /// Connects (one connection is opened to check the server) and detects the
    /// server's features. Tables are created by [`Store::migrate`].
    pub async fn connect(config: PgConfig) -> Result<Self> {
        config.check()?;
        let options: PgConnectOptions = config.url.parse().map_err(|_| {
            StoreError::Validation(format!("invalid PostgreSQL URL {}", config.redacted_url()))
        })?;
        let mut settings = vec![
            ("search_path".to_owned(), config.schema_name().to_owned()),
            // The adapter's statements run in well under a millisecond, but the
            // planner's estimates for some (the change feed's fetch after a bulk
            // write puts thousands of changelog rows on one transaction) pass
            // `jit_above_cost`, and compiling then took 20-50 ms per statement.
            ("jit".to_owned(), "off".to_owned()),
        ];
        if let Some(t) = config.statement_timeout {
            settings.push((
                "statement_timeout".to_owned(),
                format!("{}ms", t.as_millis().max(1)),
            ));
        }
        let options = options.options(settings).application_name("opstore");
        let pool = match PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(sqlx::Error::PoolTimedOut) => {
                let target = config.redacted_url();
                return Err(pool_timeout(Ctx::new("connect", &target), &options).await);
            }
            Err(e) => return Err(connect_error(&config, e)),
        };
        let probe =
            sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')")
                .fetch_one(&pool);
        let deadline = Deadline(config.call_timeout);
        let Some(icu) = deadline.within(probe).await else {
            let target = config.redacted_url();
            return Err(deadline.expired(Ctx::new("connect", &target), "the store was not opened"));
        };
        let icu = icu
            .and_then(|r| r.try_get::<bool, _>(0))
            .map_err(|e| connect_error(&config, e))?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                config,
                dialect: Dialect { icu },
                wake: Arc::new(Wake::new()),
            }),
        })
    }

    /// The connection pool, for queries of your own on the same tables. Its
    /// sessions have `search_path` set to the store's schema and `jit` off.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration (its `Debug` hides the password).
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// Deletes change history older than the retention; returns the number of
    /// changelog rows removed. Watchers also do this periodically.
    pub async fn purge_feed(&self) -> Result<u64> {
        purge(&self.exec(), self.inner.config.feed_retention).await
    }

    /// Deletes documents whose TTL ran out (they are already invisible to reads).
    pub async fn purge_expired(&self, schema: &'static Schema) -> Result<u64> {
        PgCollection::new(schema, self.exec(), self.inner.dialect)
            .delete_expired()
            .await
    }

    fn exec(&self) -> Exec {
        Exec::Pool(self.pooled())
    }

    fn pooled(&self) -> Pooled {
        Pooled {
            pool: self.inner.pool.clone(),
            deadline: Deadline(self.inner.config.call_timeout),
        }
    }

    async fn migrate_locked(
        &self,
        conn: &mut sqlx::PgConnection,
        schemas: &[&'static Schema],
    ) -> Result<MigrationReport> {
        let ctx = Ctx::new("migrate", self.inner.config.schema_name());
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote(self.inner.config.schema_name())
        );
        sqlx::raw_sql(AssertSqlSafe(create))
            .execute(&mut *conn)
            .await
            .map_err(|e| map(ctx, e))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS opstore_migrations (version text PRIMARY KEY, checksum text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| map(ctx, e))?;
        let mut steps = vec![(CORE_VERSION.to_owned(), CORE_DDL.to_owned())];
        for schema in schemas {
            steps.push((format!("entity_{}", schema.name()), entity_ddl(schema)));
        }
        let mut report = MigrationReport::default();
        for (version, ddl) in steps {
            let checksum = match version.strip_prefix("entity_") {
                Some(_) => entity_version_of(schemas, &version),
                None => format!("{:016x}", checksum(&ddl)),
            };
            let applied: Option<String> =
                sqlx::query_scalar("SELECT checksum FROM opstore_migrations WHERE version = $1")
                    .bind(&version)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| map(ctx, e))?;
            if applied.as_deref() == Some(checksum.as_str()) {
                report.unchanged.push(version);
                continue;
            }
            let mut tx = conn.begin().await.map_err(|e| map(ctx, e))?;
            sqlx::raw_sql(AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(|e| map(Ctx::new("migrate", &version), e))?;
            sqlx::query(
                "INSERT INTO opstore_migrations (version, checksum) VALUES ($1, $2) \
                 ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()",
            )
            .bind(&version)
            .bind(&checksum)
            .execute(&mut *tx)
            .await
            .map_err(|e| map(ctx, e))?;
            tx.commit().await.map_err(|e| map(ctx, e))?;
            report.applied.push(version);
        }
        Ok(report)
    }
}

fn entity_version_of(schemas: &[&'static Schema], version: &str) -> String {
    schemas
        .iter()
        .find(|s| format!("entity_{}", s.name()) == version)
        .map(|s| entity_version(s))
        .unwrap_or_default()
}

/// FNV-1a over the DDL text, to notice changed definitions.
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn connect_error(config: &PgConfig, e: sqlx::Error) -> StoreError {
    let target = config.redacted_url();
    match map(Ctx::new("connect", &target), e) {
        StoreError::Backend { message, source } => StoreError::Connection(match source {
            Some(s) => format!("{message}: {s}"),
            None => message,
        }),
        other => other,
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        let mut sql = Sql::new();
        sql.push("SELECT current_setting('server_version')");
        let row = self
            .exec()
            .fetch_one(Ctx::new("health", "server"), sql)
            .await?;
        let version: String = row
            .try_get(0)
            .map_err(|e| StoreError::backend("decoding server version", e))?;
        Ok(HealthReport {
            backend: "postgres",
            server: format!("PostgreSQL {version}"),
            latency: started.elapsed(),
        })
    }

    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport> {
        let ctx = Ctx::new("migrate", self.inner.config.schema_name());
        let mut conn = self.inner.pool.acquire().await.map_err(|e| map(ctx, e))?;
        // A session-level advisory lock per schema: concurrent migrations from
        // several processes run one after the other, the later ones finding
        // every step already applied.
        sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(MIGRATION_LOCK_CLASS)
            .bind(self.inner.config.schema_name())
            .execute(&mut *conn)
            .await
            .map_err(|e| map(ctx, e))?;
        let result = self.migrate_locked(&mut conn, schemas).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(MIGRATION_LOCK_CLASS)
            .bind(self.inner.config.schema_name())
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock dies with the session; do not hand a locked session back.
            conn.detach();
        }
        result
    }

    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(PgCollection::new(
            schema,
            self.exec(),
            self.inner.dialect,
        )))
    }

    fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(PgFeed {
            pooled: self.pooled(),
            channel: format!("opstore_feed_{}", self.inner.config.schema_name()),
            retention: self.inner.config.feed_retention,
            poll: self.inner.config.feed_poll_interval,
            wake: Arc::clone(&self.inner.wake),
        })
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::new(PgLocks { exec: self.exec() })
    }

    fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(PgIdempotency { exec: self.exec() })
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(PgCheckpoints { exec: self.exec() })
    }

    async fn transaction<'a>(&self, options: TxOptions, work: &TxWork<'a>) -> Result<()> {
        crate::tx::run(&self.pooled(), self.inner.dialect, options, work).await
    }

    async fn close(&self) {
        self.inner.wake.stop();
        self.inner.pool.close().await;
    }
}

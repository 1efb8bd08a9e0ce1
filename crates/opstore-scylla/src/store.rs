//! The [`Store`] port on a CQL cluster: connect, migrate, hand out collections,
//! feed and coordination.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use opstore_domain::breaker::{Admission, CircuitBreaker};
use opstore_domain::{
    Capabilities, ChangeFeed, CheckpointStore, Clock, Collection, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Schema, Store, StoreError, SystemClock, TxOptions,
    TxWork,
};

use crate::codegen::{DdlKind, DdlOptions, ddl};
use crate::config::{ScanPolicy, ScyllaConfig};
use crate::driver::DriverSession;
use crate::error::{Op, map_driver_error};
use crate::exec::Exec;
use crate::flavour::Flavour;
use crate::session::CqlSession;
use crate::{collection, coord, feed, value};
/// The ScyllaDB store.
#[derive(Clone)]
pub struct ScyllaStore {
    exec: Exec,
    breaker: Arc<CircuitBreaker>,
}

impl fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("cluster", &self.exec.config.describe())
            .finish_non_exhaustive()
    }
}

impl ScyllaStore {
    /// Validates `config` and connects; `Connection` when no node answers.
    pub async fn connect(config: ScyllaConfig) -> Result<Self> {
        config.validate()?;
        let described = config.describe();
        let op = Op::new("connect", &described);
        let session = DriverSession::connect(&config)
            .await
            .map_err(|e| map_driver_error(op, e))?;
        let flavour = Flavour::detect(&session)
            .await
            .map_err(|e| map_driver_error(op, e))?;
        tracing::debug!(flavour = flavour.name(), "connected to a CQL cluster");
        Ok(Self::with_session(
            config,
            Arc::new(session),
            flavour,
            Arc::new(SystemClock),
        ))
    }

    /// A store over any [`CqlSession`] (the driver, or a recording fake in unit
    /// tests) of a server of `flavour`; `clock` drives the health check's circuit
    /// breaker.
    pub fn with_session(
        config: ScyllaConfig,
        session: Arc<dyn CqlSession>,
        flavour: Flavour,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let breaker = Arc::new(CircuitBreaker::new(config.breaker, clock));
        ScyllaStore {
            exec: Exec {
                session,
                config: Arc::new(config),
                flavour,
            },
            breaker,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ScyllaConfig {
        &self.exec.config
    }

    /// The server flavour detected at connect.
    pub fn flavour(&self) -> Flavour {
        self.exec.flavour
    }

    /// The health check's circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Probes the cluster every `health_check_interval` until the task is aborted,
    /// logging transitions; the breaker keeps a dead cluster from being hammered.
    pub fn spawn_health_checks(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(store.exec.config.health_check_interval);
            loop {
                tick.tick().await;
                if let Err(e) = store.health().await {
                    tracing::warn!(error = %e, "scylla health check failed");
                }
            }
        })
    }

    /// Empties every table of the configured keyspace (entity, change-log, unique,
    /// lease, idempotency and checkpoint tables) and keeps the schema: a reset for
    /// tests and staging environments that is much cheaper than recreating it.
    pub async fn truncate_keyspace(&self) -> Result<()> {
        let ks = self.exec.config.keyspace.clone();
        let tables = self
            .names(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                "table_name",
            )
            .await?;
        for table in tables {
            self.exec
                .session
                .schema_change(&format!("TRUNCATE TABLE {ks}.\"{table}\""))
                .await
                .map_err(|e| map_driver_error(Op::new("truncate", &table), e))?;
        }
        Ok(())
    }

    fn ddl_options(&self) -> DdlOptions {
        let c = &self.exec.config;
        DdlOptions {
            keyspace: c.keyspace.clone(),
            replication: c.replication.clone(),
            flavour: self.exec.flavour,
            tablets: c.tablets,
            cdc_ttl_secs: c.feed.retention.as_secs().max(1),
        }
    }

    async fn names(&self, cql: &str, column: &str) -> Result<Vec<String>> {
        let ks = self.exec.config.keyspace.clone();
        let stmt = self.exec.stmt(cql.to_owned());
        let rows = self
            .exec
            .run(
                Op::new("migrate", &ks),
                &stmt,
                &[value::CqlValue::Text(ks.clone())],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.text(column).map(str::to_owned))
            .collect())
    }
}

#[async_trait]
impl Store for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    fn capabilities(&self) -> Capabilities {
        let bounded = matches!(self.exec.config.scan_policy, ScanPolicy::Bounded { .. });
        let feed_note = if self.exec.flavour.has_cdc_log() {
            "change feed from CDC log tables, ordered per partition, read a confidence window behind now"
        } else {
            "no change feed on Cassandra: its CDC writes commit-log segments for external readers, not CQL tables; \
             watch is Unsupported (use ScyllaDB, PostgreSQL or MongoDB for event processors)"
        };
        Capabilities {
            transactions: false,
            row_locks: false,
            change_feed: self.exec.flavour.has_cdc_log(),
            change_feed_order: "partition",
            // A bounded scan serves any filter and sort (in process, up to its cap).
            sort_any_field: bounded,
            filter_any_field: bounded,
            aggregates: false,
            claim: true,
            notes: vec![
                "no multi-document transactions: single-document writes are compare-and-set (LWT)".into(),
                "filters need an equality on the key or an indexed field; others are Unsupported unless ScanPolicy::Bounded".into(),
                "sorts, count-by and min/max/sum run in process over the rows a key or index lookup selects".into(),
                feed_note.into(),
                "insert_many checks keys first and rolls back its own rows if a concurrent writer wins a key".into(),
                format!("bounded scans {}", if bounded { "enabled" } else { "disabled" }),
            ],
        }
    }

    async fn health(&self) -> Result<HealthReport> {
        if let Admission::Rejected { retry_in, .. } = self.breaker.admit() {
            return Err(StoreError::Connection(format!(
                "health check of {} skipped: circuit open after repeated failures; next probe in {retry_in:?}",
                self.exec.config.describe()
            )));
        }
        let started = Instant::now();
        let stmt = self
            .exec
            .stmt("SELECT release_version FROM system.local".into());
        match self.exec.session.execute(&stmt, &[]).await {
            Ok(rows) => {
                self.breaker.record_success();
                Ok(HealthReport {
                    backend: "scylla",
                    server: rows
                        .first()
                        .and_then(|r| r.text("release_version"))
                        .map_or_else(
                            || self.exec.flavour.name().to_owned(),
                            |v| format!("{} (release {v})", self.exec.flavour.name()),
                        ),
                    latency: started.elapsed(),
                })
            }
            Err(e) => {
                self.breaker.record_failure();
                Err(map_driver_error(
                    Op::new("health", &self.exec.config.describe()),
                    e,
                ))
            }
        }
    }

    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport> {
        let ks = self.exec.config.keyspace.clone();
        let op = Op::new("migrate", &ks);
        let keyspaces = self
            .names(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                "keyspace_name",
            )
            .await?;
        let (tables, indexes) = if keyspaces.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                self.names(
                    "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                    "table_name",
                )
                .await?,
                self.names(
                    "SELECT index_name FROM system_schema.indexes WHERE keyspace_name = ?",
                    "index_name",
                )
                .await?,
            )
        };
        let mut report = MigrationReport::default();
        for step in ddl(&self.ddl_options(), schemas) {
            let exists = match step.kind {
                DdlKind::Keyspace => !keyspaces.is_empty(),
                DdlKind::Table => tables.contains(&step.name),
                DdlKind::Index => indexes.contains(&step.name),
            };
            let label = format!("{:?} {}", step.kind, step.name).to_lowercase();
            if !exists {
                self.exec
                    .session
                    .schema_change(&step.cql)
                    .await
                    .map_err(|e| map_driver_error(op, e))?;
                report.applied.push(label);
                continue;
            }
            if step.kind == DdlKind::Table {
                let stmt = self.exec.stmt(
                    "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?".into(),
                );
                let rows = self
                    .exec
                    .run(
                        op,
                        &stmt,
                        &[
                            value::CqlValue::Text(ks.clone()),
                            value::CqlValue::Text(step.name.clone()),
                        ],
                    )
                    .await?;
                let have: Vec<&str> = rows.iter().filter_map(|r| r.text("column_name")).collect();
                for (col, ty) in &step.columns {
                    if !have.contains(&col.trim_matches('"')) {
                        let cql = format!("ALTER TABLE {ks}.{} ADD {col} {ty}", step.name);
                        self.exec
                            .session
                            .schema_change(&cql)
                            .await
                            .map_err(|e| map_driver_error(op, e))?;
                        report.applied.push(format!(
                            "column {}.{}",
                            step.name,
                            col.trim_matches('"')
                        ));
                    }
                }
            }
            report.unchanged.push(label);
        }
        self.exec
            .session
            .await_schema_agreement()
            .await
            .map_err(|e| map_driver_error(op, e))?;
        Ok(report)
    }

    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(collection::ScyllaCollection::new(
            self.exec.clone(),
            schema,
        )))
    }

    fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(feed::ScyllaFeed::new(self.exec.clone()))
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::new(coord::ScyllaLocks::new(self.exec.clone()))
    }

    fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(coord::ScyllaIdempotency::new(self.exec.clone()))
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(coord::ScyllaCheckpoints::new(self.exec.clone()))
    }

    async fn transaction<'a>(&self, _options: TxOptions, _work: &TxWork<'a>) -> Result<()> {
        Err(StoreError::Unsupported(
            "transactions on scylla: ScyllaDB has no multi-partition transactions (capability transactions). \
             Use single-document writes (update_one is a compare-and-set), claim, or leases with fencing tokens"
                .into(),
        ))
    }

    async fn close(&self) {
        self.exec.session.close().await;
    }
}

//! Runs statements through the seam with the configured consistency, bounded
//! retries of idempotent statements, and error mapping.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::Result;

use crate::config::ScyllaConfig;
use crate::error::{Op, map_driver_error};
use crate::flavour::Flavour;
use crate::session::{CqlSession, RowPage};
use crate::value::{BatchKind, CqlValue, Row, Statement, applied};

/// The session plus the settings every statement needs.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The seam.
    pub session: Arc<dyn CqlSession>,
    /// Validated configuration.
    pub config: Arc<ScyllaConfig>,
    /// The server flavour, detected at connect.
    pub flavour: Flavour,
}

impl Exec {
    /// A plain statement at the configured consistency.
    pub fn stmt(&self, cql: String) -> Statement {
        Statement::new(cql, self.config.consistency).with_page_size(self.config.page_size)
    }

    /// A lightweight transaction at the configured serial consistency.
    pub fn lwt(&self, cql: String) -> Statement {
        Statement::lwt(cql, self.config.consistency, self.config.serial_consistency)
    }

    /// A linearizable read of LWT-written data.
    pub fn serial_read(&self, cql: String) -> Statement {
        Statement::new(cql, self.config.serial_consistency)
    }

    fn backoff(attempt: u32) -> Duration {
        Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(2))
    }

    /// Runs a statement; idempotent ones are retried on transient failures.
    pub async fn run(&self, op: Op<'_>, stmt: &Statement, values: &[CqlValue]) -> Result<Vec<Row>> {
        let mut attempt = 0;
        loop {
            match self.session.execute(stmt, values).await {
                Ok(rows) => return Ok(rows),
                Err(e) if stmt.idempotent && e.is_transient() && attempt < self.config.retries => {
                    tracing::debug!(op = op.name, table = op.table, error = %e, attempt, "retrying");
                    tokio::time::sleep(Self::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(map_driver_error(op, e)),
            }
        }
    }

    /// Runs a conditional statement; returns `[applied]` and the result row (which
    /// holds the current values when not applied).
    pub async fn cas(
        &self,
        op: Op<'_>,
        stmt: &Statement,
        values: &[CqlValue],
    ) -> Result<(bool, Option<Row>)> {
        let rows = self.run(op, stmt, values).await?;
        let ok = applied(&rows).map_err(|m| opstore_domain::StoreError::Backend {
            message: format!("{}: {m}", op.describe()),
            source: None,
        })?;
        Ok((ok, rows.into_iter().next()))
    }

    /// Reads one page.
    pub async fn page(
        &self,
        op: Op<'_>,
        stmt: &Statement,
        values: &[CqlValue],
        state: Option<Vec<u8>>,
    ) -> Result<RowPage> {
        let mut attempt = 0;
        loop {
            match self.session.query_page(stmt, values, state.clone()).await {
                Ok(page) => return Ok(page),
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    tokio::time::sleep(Self::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(map_driver_error(op, e)),
            }
        }
    }

    /// Runs a batch.
    pub async fn batch(
        &self,
        op: Op<'_>,
        kind: BatchKind,
        statements: &[(Statement, Vec<CqlValue>)],
    ) -> Result<Vec<Row>> {
        let serial = statements.iter().find_map(|(s, _)| s.serial_consistency);
        self.session
            .batch(kind, self.config.consistency, serial, statements)
            .await
            .map_err(|e| map_driver_error(op, e))
    }
}

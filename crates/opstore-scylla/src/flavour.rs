//! Which CQL server the store talks to: ScyllaDB or Apache Cassandra.
//!
//! Both speak CQL, but they differ in what the adapter relies on: ScyllaDB has
//! CQL-readable CDC log tables and the `tablets` keyspace option; Cassandra has
//! neither (its CDC writes commit-log segments to disk for external readers).
//! The store detects the flavour once at connect and emits only what that
//! server accepts.

use crate::session::{CqlSession, DriverError};
use crate::value::{Consistency, CqlValue, Statement};

/// The CQL server flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// ScyllaDB: CDC log tables, `tablets`.
    Scylla,
    /// Apache Cassandra: no CQL-readable change log.
    Cassandra,
}

impl Flavour {
    /// Asks the server: only ScyllaDB has the `system.scylla_local` table.
    pub async fn detect(session: &dyn CqlSession) -> Result<Flavour, DriverError> {
        let stmt = Statement::new(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
            Consistency::One,
        );
        let rows = session
            .execute(
                &stmt,
                &[
                    CqlValue::Text("system".into()),
                    CqlValue::Text("scylla_local".into()),
                ],
            )
            .await?;
        Ok(if rows.is_empty() {
            Flavour::Cassandra
        } else {
            Flavour::Scylla
        })
    }

    /// Lowercase name, for messages and health reports.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Scylla => "scylladb",
            Flavour::Cassandra => "cassandra",
        }
    }

    /// Whether entity tables get CDC log tables the change feed can read.
    pub fn has_cdc_log(self) -> bool {
        self == Flavour::Scylla
    }

    /// Whether the keyspace accepts the `tablets` option.
    pub fn has_tablets(self) -> bool {
        self == Flavour::Scylla
    }
}

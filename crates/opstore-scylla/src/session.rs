//! The narrow seam in front of the driver: [`CqlSession`] runs prepared
//! statements, pages and batches over the adapter's own values and rows.
//!
//! [`DriverSession`](crate::driver::DriverSession) implements it on the driver.
//! Every other module talks to the seam only, so their CQL and their handling of
//! results are unit-tested with a recording fake, without a server.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::value::{BatchKind, Consistency, CqlValue, Row, Statement};

/// A failure reported by the driver or the server, classified for mapping to
/// `StoreError` (see `error.rs`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// No node reachable, or the connection broke.
    #[error("connection: {0}")]
    Connection(String),
    /// A client or server timeout; for LWT writes the outcome is unknown.
    #[error("timeout: {0}")]
    Timeout(String),
    /// Not enough live replicas, or the node is overloaded or bootstrapping.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server rejected the statement (syntax, unknown table or column, bad value).
    #[error("invalid statement: {0}")]
    Invalid(String),
    /// Authentication or authorization failed.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// The session was closed by `Store::close`.
    #[error("session closed")]
    Closed,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl DriverError {
    /// Whether retrying an idempotent statement may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DriverError::Connection(_) | DriverError::Timeout(_) | DriverError::Unavailable(_)
        )
    }
}

/// One page of a paged read.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPage {
    /// Rows of this page.
    pub rows: Vec<Row>,
    /// Where the next page starts; `None` after the last page.
    pub paging_state: Option<Vec<u8>>,
}

/// What the adapter needs from a CQL session.
#[async_trait]
pub trait CqlSession: Send + Sync + fmt::Debug + 'static {
    /// Runs a (prepared, cached) statement and returns all rows of a small result.
    async fn execute(&self, stmt: &Statement, values: &[CqlValue])
    -> Result<Vec<Row>, DriverError>;
    /// Reads one page of a (prepared, cached) statement.
    async fn query_page(
        &self,
        stmt: &Statement,
        values: &[CqlValue],
        paging_state: Option<Vec<u8>>,
    ) -> Result<RowPage, DriverError>;
    /// Runs prepared statements as one batch; a conditional batch returns `[applied]`.
    async fn batch(
        &self,
        kind: BatchKind,
        consistency: Consistency,
        serial: Option<Consistency>,
        statements: &[(Statement, Vec<CqlValue>)],
    ) -> Result<Vec<Row>, DriverError>;
    /// Runs a schema change (DDL) unprepared.
    async fn schema_change(&self, cql: &str) -> Result<(), DriverError>;
    /// Waits until every node reports the same schema version.
    async fn await_schema_agreement(&self) -> Result<(), DriverError>;
    /// Drops connections; later calls fail with [`DriverError::Closed`].
    async fn close(&self);
}

/// Prepared statements by CQL text: each distinct statement is prepared once.
#[derive(Debug)]
pub struct StatementCache<P> {
    entries: RwLock<HashMap<String, Arc<P>>>,
    capacity: usize,
}

impl<P> StatementCache<P> {
    /// A cache holding at most `capacity` statements (older ones are evicted
    /// wholesale when full, which only costs re-preparation).
    pub fn new(capacity: usize) -> Self {
        StatementCache {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The cached statement for `cql`, preparing it with `prepare` on a miss.
    pub async fn get_or_prepare<E, F, Fut>(&self, cql: &str, prepare: F) -> Result<Arc<P>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<P, E>>,
    {
        if let Some(p) = self.entries.read().ok().and_then(|m| m.get(cql).cloned()) {
            return Ok(p);
        }
        let prepared = Arc::new(prepare().await?);
        if let Ok(mut map) = self.entries.write() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(cql.to_owned(), Arc::clone(&prepared));
        }
        Ok(prepared)
    }

    /// Number of cached statements.
    pub fn len(&self) -> usize {
        self.entries.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn statement_cache_prepares_each_text_once() {
        let cache: StatementCache<String> = StatementCache::new(10);
        let prepares = AtomicUsize::new(0);
        for _ in 0..3 {
            for cql in ["SELECT a FROM t WHERE k = ?", "SELECT b FROM t WHERE k = ?"] {
                let p = cache
                    .get_or_prepare::<(), _, _>(cql, || async {
                        prepares.fetch_add(1, Ordering::SeqCst);
                        Ok(cql.to_owned())
                    })
                    .await
                    .unwrap();
                assert_eq!(*p, cql);
            }
        }
        assert_eq!(prepares.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn statement_cache_does_not_keep_failures() {
        let cache: StatementCache<String> = StatementCache::new(10);
        let err = cache
            .get_or_prepare("bad", || async { Err::<String, _>("syntax") })
            .await
            .unwrap_err();
        assert_eq!(err, "syntax");
        assert!(cache.is_empty());
    }
}

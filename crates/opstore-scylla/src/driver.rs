//! [`CqlSession`] on the scylla driver: session setup (profiles, TLS, timeouts),
//! statement preparation through the cache, conversion between the adapter's
//! values and the driver's, and classification of driver errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, PagerExecutionError, PrepareError,
    RequestAttemptError, SchemaAgreementError, WriteType,
};
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid, MaybeUnset};

use crate::config::ScyllaConfig;
use crate::session::{CqlSession, DriverError, RowPage, StatementCache};
use crate::value::{BatchKind, Consistency, CqlValue, Row, Statement};

/// [`CqlSession`] on the scylla driver: token- and shard-aware routing, prepared
/// statements cached by text, retries left to the adapter (`ScyllaConfig::retries`).
pub struct DriverSession {
    session: Session,
    cache: StatementCache<PreparedStatement>,
    closed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for DriverSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverSession")
            .field("prepared", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl DriverSession {
    /// Connects to the cluster described by `config` (already validated).
    pub async fn connect(config: &ScyllaConfig) -> Result<Self, DriverError> {
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(config.request_timeout))
            .consistency(to_driver_consistency(config.consistency))
            .serial_consistency(to_serial(Some(config.serial_consistency)))
            .retry_policy(Arc::new(FallthroughRetryPolicy))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.hosts)
            .connection_timeout(config.connect_timeout)
            .schema_agreement_timeout(config.schema_agreement_timeout)
            .tcp_keepalive_interval(Duration::from_secs(15))
            .default_execution_profile_handle(profile.into_handle());
        if let Some(creds) = &config.credentials {
            builder = builder.user(creds.username.clone(), creds.password.expose());
        }
        if let Some(tls) = &config.tls {
            // The store validated these files already; a failure here means they
            // changed in between.
            let client =
                crate::tls::client_config(tls).map_err(|e| DriverError::Other(e.to_string()))?;
            builder = builder.tls_context(Some(Arc::new(client)));
        }
        let session = tokio::time::timeout(config.connect_timeout * 2, builder.build())
            .await
            .map_err(|_| {
                DriverError::Timeout(format!(
                    "connecting to {} took longer than {:?}",
                    config.hosts.join(","),
                    config.connect_timeout * 2
                ))
            })?
            .map_err(classify_new_session)?;
        Ok(DriverSession {
            session,
            cache: StatementCache::new(config.max_prepared_statements),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The driver session, for callers that need the raw driver (benchmarks).
    pub fn raw(&self) -> &Session {
        &self.session
    }

    fn check_open(&self) -> Result<(), DriverError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(DriverError::Closed);
        }
        Ok(())
    }

    async fn prepared(&self, stmt: &Statement) -> Result<PreparedStatement, DriverError> {
        self.check_open()?;
        let cached = self
            .cache
            .get_or_prepare(&stmt.cql, || async {
                self.session
                    .prepare(stmt.cql.as_str())
                    .await
                    .map_err(classify_prepare)
            })
            .await?;
        let mut prepared = (*cached).clone();
        prepared.set_consistency(to_driver_consistency(stmt.consistency));
        prepared.set_serial_consistency(to_serial(stmt.serial_consistency));
        prepared.set_is_idempotent(stmt.idempotent);
        prepared.set_page_size(stmt.page_size);
        Ok(prepared)
    }
}

type Bound = Vec<MaybeUnset<Option<scylla::value::CqlValue>>>;

fn bind(values: &[CqlValue]) -> Bound {
    values
        .iter()
        .map(|v| match v {
            CqlValue::Unset => MaybeUnset::Unset,
            other => MaybeUnset::Set(to_driver_value(other)),
        })
        .collect()
}

/// Converts an adapter value to the driver's (`None` is null).
pub(crate) fn to_driver_value(v: &CqlValue) -> Option<scylla::value::CqlValue> {
    use scylla::value::CqlValue as D;
    Some(match v {
        CqlValue::Null | CqlValue::Unset => return None,
        CqlValue::Text(s) => D::Text(s.clone()),
        CqlValue::BigInt(i) => D::BigInt(*i),
        CqlValue::Int(i) => D::Int(*i),
        CqlValue::Double(f) => D::Double(*f),
        CqlValue::Boolean(b) => D::Boolean(*b),
        CqlValue::Timestamp(ms) => D::Timestamp(CqlTimestamp(*ms)),
        CqlValue::Blob(b) => D::Blob(b.clone()),
        CqlValue::Timeuuid(b) => D::Timeuuid(CqlTimeuuid::from_bytes(*b)),
        CqlValue::List(items) => D::List(items.iter().filter_map(to_driver_value).collect()),
        CqlValue::Set(items) => D::Set(items.iter().filter_map(to_driver_value).collect()),
        CqlValue::Map(entries) => D::Map(
            entries
                .iter()
                .filter_map(|(k, v)| Some((to_driver_value(k)?, to_driver_value(v)?)))
                .collect(),
        ),
    })
}

/// Converts a driver value to the adapter's.
pub(crate) fn from_driver_value(v: Option<scylla::value::CqlValue>) -> CqlValue {
    use scylla::value::CqlValue as D;
    let Some(v) = v else { return CqlValue::Null };
    match v {
        D::Text(s) | D::Ascii(s) => CqlValue::Text(s),
        D::BigInt(i) => CqlValue::BigInt(i),
        D::Int(i) => CqlValue::Int(i),
        D::SmallInt(i) => CqlValue::BigInt(i64::from(i)),
        D::TinyInt(i) => CqlValue::BigInt(i64::from(i)),
        D::Counter(c) => CqlValue::BigInt(c.0),
        D::Double(f) => CqlValue::Double(f),
        D::Float(f) => CqlValue::Double(f64::from(f)),
        D::Boolean(b) => CqlValue::Boolean(b),
        D::Timestamp(t) => CqlValue::Timestamp(t.0),
        D::Blob(b) => CqlValue::Blob(b),
        D::Timeuuid(u) => CqlValue::Timeuuid(*u.as_bytes()),
        D::Uuid(u) => CqlValue::Timeuuid(*u.as_bytes()),
        D::List(items) | D::Vector(items) => CqlValue::List(
            items
                .into_iter()
                .map(|i| from_driver_value(Some(i)))
                .collect(),
        ),
        D::Set(items) => CqlValue::Set(
            items
                .into_iter()
                .map(|i| from_driver_value(Some(i)))
                .collect(),
        ),
        D::Map(entries) => CqlValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| (from_driver_value(Some(k)), from_driver_value(Some(v))))
                .collect(),
        ),
        D::Empty => CqlValue::Null,
        other => CqlValue::Text(format!("{other:?}")),
    }
}

fn rows_of(result: QueryResult) -> Result<Vec<Row>, DriverError> {
    if !result.is_rows() {
        return Ok(Vec::new());
    }
    let rows = result
        .into_rows_result()
        .map_err(|e| DriverError::Other(format!("reading result rows: {e}")))?;
    let columns: Arc<[String]> = rows
        .column_specs()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let iter = rows
        .rows::<scylla::value::Row>()
        .map_err(|e| DriverError::Other(format!("decoding result rows: {e}")))?;
    let mut out = Vec::new();
    for row in iter {
        let row = row.map_err(|e| DriverError::Other(format!("decoding a result row: {e}")))?;
        let values = row.columns.into_iter().map(from_driver_value).collect();
        out.push(Row::new(Arc::clone(&columns), values));
    }
    Ok(out)
}

#[async_trait]
impl CqlSession for DriverSession {
    async fn execute(
        &self,
        stmt: &Statement,
        values: &[CqlValue],
    ) -> Result<Vec<Row>, DriverError> {
        let prepared = self.prepared(stmt).await?;
        let result = self
            .session
            .execute_unpaged(&prepared, bind(values))
            .await
            .map_err(classify_execution)?;
        rows_of(result)
    }

    async fn query_page(
        &self,
        stmt: &Statement,
        values: &[CqlValue],
        paging_state: Option<Vec<u8>>,
    ) -> Result<RowPage, DriverError> {
        let prepared = self.prepared(stmt).await?;
        let state = match paging_state {
            Some(bytes) => PagingState::new_from_raw_bytes(bytes),
            None => PagingState::start(),
        };
        let (result, next) = self
            .session
            .execute_single_page(&prepared, bind(values), state)
            .await
            .map_err(classify_execution)?;
        let paging_state = match next {
            PagingStateResponse::HasMorePages { state } => {
                state.as_bytes_slice().map(|b| b.to_vec())
            }
            PagingStateResponse::NoMorePages => None,
        };
        Ok(RowPage {
            rows: rows_of(result)?,
            paging_state,
        })
    }

    async fn batch(
        &self,
        kind: BatchKind,
        consistency: Consistency,
        serial: Option<Consistency>,
        statements: &[(Statement, Vec<CqlValue>)],
    ) -> Result<Vec<Row>, DriverError> {
        let mut batch = Batch::new(match kind {
            BatchKind::Logged => BatchType::Logged,
            BatchKind::Unlogged => BatchType::Unlogged,
        });
        let mut values = Vec::with_capacity(statements.len());
        let mut idempotent = true;
        for (stmt, vals) in statements {
            batch.append_statement(self.prepared(stmt).await?);
            values.push(bind(vals));
            idempotent &= stmt.idempotent;
        }
        batch.set_consistency(to_driver_consistency(consistency));
        batch.set_serial_consistency(to_serial(serial));
        batch.set_is_idempotent(idempotent);
        let result = self
            .session
            .batch(&batch, values)
            .await
            .map_err(classify_execution)?;
        rows_of(result)
    }

    async fn schema_change(&self, cql: &str) -> Result<(), DriverError> {
        self.check_open()?;
        self.session
            .query_unpaged(cql, ())
            .await
            .map_err(classify_execution)?;
        Ok(())
    }

    async fn await_schema_agreement(&self) -> Result<(), DriverError> {
        self.check_open()?;
        self.session
            .await_schema_agreement()
            .await
            .map(drop)
            .map_err(classify_schema_agreement)
    }

    async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

fn to_driver_consistency(c: Consistency) -> scylla::statement::Consistency {
    use scylla::statement::Consistency as D;
    match c {
        Consistency::Any => D::Any,
        Consistency::One => D::One,
        Consistency::Two => D::Two,
        Consistency::Three => D::Three,
        Consistency::Quorum => D::Quorum,
        Consistency::All => D::All,
        Consistency::LocalQuorum => D::LocalQuorum,
        Consistency::EachQuorum => D::EachQuorum,
        Consistency::LocalOne => D::LocalOne,
        Consistency::Serial => D::Serial,
        Consistency::LocalSerial => D::LocalSerial,
    }
}

fn to_serial(c: Option<Consistency>) -> Option<scylla::statement::SerialConsistency> {
    use scylla::statement::SerialConsistency as S;
    match c? {
        Consistency::Serial => Some(S::Serial),
        _ => Some(S::LocalSerial),
    }
}

/// Classifies a server error response.
pub(crate) fn classify_db(err: &DbError, message: &str) -> DriverError {
    let text = format!("{err}: {message}");
    match err {
        DbError::ReadTimeout { .. } => DriverError::Timeout(text),
        DbError::WriteTimeout { write_type, .. } => {
            if *write_type == WriteType::Cas {
                DriverError::Timeout(format!("{text} (conditional write: outcome unknown)"))
            } else {
                DriverError::Timeout(text)
            }
        }
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::RateLimitReached { .. } => DriverError::Unavailable(text),
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::ConfigError
        | DbError::FunctionFailure { .. } => DriverError::Invalid(text),
        DbError::AuthenticationError | DbError::Unauthorized => DriverError::Unauthorized(text),
        _ => DriverError::Other(text),
    }
}

fn classify_attempt(err: &RequestAttemptError) -> DriverError {
    match err {
        RequestAttemptError::DbError(db, message) => classify_db(db, message),
        RequestAttemptError::BrokenConnectionError(e) => DriverError::Connection(e.to_string()),
        RequestAttemptError::UnableToAllocStreamId => {
            DriverError::Unavailable("no free stream id on the connection".into())
        }
        other => DriverError::Other(other.to_string()),
    }
}

/// Classifies an error of a request.
pub(crate) fn classify_execution(err: ExecutionError) -> DriverError {
    match &err {
        ExecutionError::LastAttemptError(e) => classify_attempt(e),
        ExecutionError::ConnectionPoolError(e) => DriverError::Connection(e.to_string()),
        ExecutionError::EmptyPlan => DriverError::Connection(err.to_string()),
        ExecutionError::RequestTimeout(d) => {
            DriverError::Timeout(format!("no response within {}ms", d.as_millis()))
        }
        ExecutionError::PrepareError(e) => classify_prepare(e.clone()),
        ExecutionError::SchemaAgreementError(e) => classify_schema_agreement(e.clone()),
        ExecutionError::BadQuery(e) => DriverError::Invalid(e.to_string()),
        _ => DriverError::Other(err.to_string()),
    }
}

fn classify_prepare(err: PrepareError) -> DriverError {
    match &err {
        PrepareError::ConnectionPoolError(e) => DriverError::Connection(e.to_string()),
        PrepareError::AllAttemptsFailed { first_attempt } => classify_attempt(first_attempt),
        _ => DriverError::Other(err.to_string()),
    }
}

fn classify_schema_agreement(err: SchemaAgreementError) -> DriverError {
    match &err {
        SchemaAgreementError::Timeout(d) => DriverError::Timeout(format!(
            "schema agreement not reached within {}ms",
            d.as_millis()
        )),
        SchemaAgreementError::ConnectionPoolError(e) => DriverError::Connection(e.to_string()),
        _ => DriverError::Other(err.to_string()),
    }
}

/// Classifies a failure to open a session: no node could be reached or used.
pub(crate) fn classify_new_session(err: NewSessionError) -> DriverError {
    DriverError::Connection(err.to_string())
}

/// Keeps the pager error type in use for callers that stream with `execute_iter`.
#[allow(dead_code)]
fn classify_pager(err: PagerExecutionError) -> DriverError {
    DriverError::Other(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_driver_types() {
        let values = vec![
            CqlValue::Text("a".into()),
            CqlValue::BigInt(-3),
            CqlValue::Double(1.5),
            CqlValue::Boolean(true),
            CqlValue::Timestamp(1_700_000_000_123),
            CqlValue::Blob(vec![1, 2]),
            CqlValue::Timeuuid([7; 16]),
            CqlValue::List(vec![CqlValue::Text("x".into())]),
            CqlValue::Set(vec![CqlValue::BigInt(1)]),
            CqlValue::Map(vec![(CqlValue::Text("k".into()), CqlValue::Double(2.0))]),
        ];
        for v in values {
            assert_eq!(from_driver_value(to_driver_value(&v)), v);
        }
        assert_eq!(to_driver_value(&CqlValue::Null), None);
        assert_eq!(from_driver_value(None), CqlValue::Null);
    }

    #[test]
    fn server_errors_are_classified() {
        let timeout = classify_db(
            &DbError::WriteTimeout {
                consistency: scylla::statement::Consistency::Quorum,
                received: 1,
                required: 2,
                write_type: WriteType::Cas,
            },
            "cas timeout",
        );
        assert!(matches!(&timeout, DriverError::Timeout(m) if m.contains("outcome unknown")));
        assert!(matches!(
            classify_db(&DbError::Overloaded, "busy"),
            DriverError::Unavailable(_)
        ));
        assert!(matches!(
            classify_db(&DbError::Invalid, "unconfigured table items"),
            DriverError::Invalid(m) if m.contains("unconfigured table")
        ));
        assert!(matches!(
            classify_db(&DbError::Unauthorized, "no"),
            DriverError::Unauthorized(_)
        ));
        assert!(matches!(
            classify_execution(ExecutionError::RequestTimeout(Duration::from_millis(5))),
            DriverError::Timeout(m) if m.contains("5ms")
        ));
        assert!(matches!(
            classify_execution(ExecutionError::EmptyPlan),
            DriverError::Connection(_)
        ));
        assert!(matches!(
            classify_new_session(NewSessionError::EmptyKnownNodesList),
            DriverError::Connection(_)
        ));
        assert!(DriverError::Unavailable(String::new()).is_transient());
        assert!(!DriverError::Invalid(String::new()).is_transient());
    }
}

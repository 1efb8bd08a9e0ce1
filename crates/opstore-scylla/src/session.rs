//! The narrow seam in front of the driver: [`CqlSession`] runs prepared
//! statements, pages and batches over the adapter's own values and rows.
//!
//! [`DriverSession`] implements it on `scylla::client::session::Session`. Every
//! other module talks to the seam only, so their CQL and their handling of results
//! are unit-tested with a recording fake, without a server.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
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

use opstore_domain::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{ScyllaConfig, ScyllaTls};
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
            let client = tls_client_config(tls).map_err(|e| DriverError::Other(e.to_string()))?;
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

fn tls_error(option: &str, path: &std::path::Path, detail: impl fmt::Display) -> StoreError {
    StoreError::Validation(format!(
        "scylla config: {option} `{}`: {detail}",
        path.display()
    ))
}

/// Builds the rustls client configuration of `tls`, reading its PEM files. Errors
/// are `Validation` naming the URL option and the path, never file contents.
pub(crate) fn tls_client_config(tls: &ScyllaTls) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&tls.ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    if cas.is_empty() {
        return Err(tls_error(
            "tls_ca_file",
            &tls.ca_file,
            "holds no PEM certificate",
        ));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    let name = match (&tls.server_name, tls.verify_server_name) {
        (Some(_), false) => {
            return Err(StoreError::Validation(
                "scylla config: tls_server_name has no effect with tls_verify_hostname=false"
                    .into(),
            ));
        }
        (Some(name), true) => {
            NameCheck::Fixed(ServerName::try_from(name.clone()).map_err(|_| {
                StoreError::Validation(format!(
                    "scylla config: tls_server_name {name:?} is not a DNS name or IP address"
                ))
            })?)
        }
        (None, true) => NameCheck::NodeAddress,
        (None, false) => NameCheck::Off,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Validation(format!("scylla config: TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier {
            inner: webpki,
            name,
        }));
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(StoreError::Validation(
            "scylla config: tls_cert_file needs tls_key_file (the certificate's private key)"
                .into(),
        )),
        (None, Some(_)) => Err(StoreError::Validation(
            "scylla config: tls_key_file needs tls_cert_file (the client certificate)".into(),
        )),
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_error("tls_cert_file", cert_file, e))?;
            if chain.is_empty() {
                return Err(tls_error(
                    "tls_cert_file",
                    cert_file,
                    "holds no PEM certificate",
                ));
            }
            // The parser's message never includes key material.
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    tls_error("tls_key_file", key_file, "holds no PEM private key")
                }
                other => tls_error("tls_key_file", key_file, other),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("tls_key_file", key_file, e))
        }
    }
}

/// Which name a node's certificate must carry.
#[derive(Debug)]
enum NameCheck {
    /// The address the driver connected to.
    NodeAddress,
    /// One name shared by every node.
    Fixed(ServerName<'static>),
    /// Any name; the chain is still verified.
    Off,
}

/// The WebPKI verifier with the name check chosen by configuration.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: NameCheck,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.name {
            NameCheck::Fixed(name) => name,
            NameCheck::NodeAddress | NameCheck::Off => server_name,
        };
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        match (&self.name, verdict) {
            // WebPKI checks the name only after the chain, so this error means the
            // chain itself was trusted.
            (
                NameCheck::Off,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )),
            ) => Ok(ServerCertVerified::assertion()),
            (_, verdict) => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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

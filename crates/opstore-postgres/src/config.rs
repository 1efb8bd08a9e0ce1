//! Connection configuration.

use std::fmt;
use std::time::Duration;

use opstore_domain::redact::redact_url;
use opstore_domain::{Result, StoreError};

/// Largest document accepted, in bytes of its JSON text. Checked before anything
/// is sent, so an oversized document is a `Validation` error, never a server
/// failure halfway through a batch. PostgreSQL's own jsonb limit is 255 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// How to reach PostgreSQL and how the adapter behaves.
///
/// TLS follows `sslmode` in the URL (`disable`, `prefer`, `require`,
/// `verify-ca`, `verify-full`) and uses rustls. `Debug` and every error message
/// show the URL with its password replaced by `***`.
///
/// ```
/// use std::time::Duration;
/// use opstore_postgres::PgConfig;
///
/// let mut config = PgConfig::from_url("postgres://app:s3cret@db.internal:5432/ops?sslmode=require");
/// config.schema = Some("ops".into());
/// config.statement_timeout = Some(Duration::from_secs(10));
/// assert_eq!(config.schema_name(), "ops");
/// assert_eq!(config.max_connections, 10);
///
/// // The password stays out of Debug output (and so out of logs).
/// let shown = format!("{config:?}");
/// assert!(shown.contains("app:***@db.internal") && !shown.contains("s3cret"), "{shown}");
/// assert_eq!(config.redacted_url(), "postgres://app:***@db.internal:5432/ops?sslmode=require");
/// ```
///
/// Connecting (needs a server):
///
/// ```no_run
/// # async fn connect() -> opstore_domain::Result<()> {
/// use opstore_domain::Store;
/// use opstore_postgres::{PgConfig, PgStore};
///
/// let store = PgStore::connect(PgConfig::from_url("postgres://app:s3cret@db.internal/ops")).await?;
/// store.migrate(&opstore_domain::entities::all_schemas()).await?;
/// println!("{:?}", store.health().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database?sslmode=...`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a call waits for a free connection before `Timeout`.
    pub acquire_timeout: Duration,
    /// Server-side limit per statement (`statement_timeout`); `None` keeps the
    /// server's setting. Exceeding it is `Timeout`.
    pub statement_timeout: Option<Duration>,
    /// Schema holding every table (`search_path`); `None` uses `public`.
    /// Lower-case ASCII letters, digits and `_`, starting with a letter or `_`.
    pub schema: Option<String>,
    /// Change-feed history older than this is purged; resuming from a purged
    /// position is `ResumeTokenExpired`.
    pub feed_retention: Duration,
    /// How often a watcher polls when no notification arrives (the fallback for
    /// a missed `NOTIFY`).
    pub feed_poll_interval: Duration,
    /// Client-side limit of each call to the server: a statement, a transaction's
    /// `BEGIN` or `COMMIT`, a whole `COPY`. A server that stops answering without
    /// closing the connection (a frozen host, a silent network partition) then
    /// costs a caller this long and a `Timeout`, never a hang; the connection in
    /// use is closed, and a cut-off `COMMIT` has an unknown outcome. `None` waits
    /// as long as the server takes. [`Store::migrate`](opstore_domain::Store::migrate)
    /// is not bounded: a long DDL step must not be cut off halfway.
    pub call_timeout: Option<Duration>,
}

impl PgConfig {
    /// A configuration for `url` with the documented defaults: 10 connections,
    /// 5 s acquire timeout, server statement timeout, schema `public`, 7 days of
    /// feed history, 500 ms poll fallback, 30 s call timeout.
    pub fn from_url(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: None,
            schema: None,
            feed_retention: Duration::from_secs(7 * 24 * 3600),
            feed_poll_interval: Duration::from_millis(500),
            call_timeout: Some(Duration::from_secs(30)),
        }
    }

    /// The schema name in effect.
    pub fn schema_name(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// Checks the parts the adapter interpolates into statements or options.
    pub(crate) fn check(&self) -> Result<()> {
        check_schema_name(self.schema_name())?;
        if self.max_connections == 0 {
            return Err(StoreError::Validation(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.feed_poll_interval.is_zero() {
            return Err(StoreError::Validation(
                "feed_poll_interval must be positive".into(),
            ));
        }
        if self.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err(StoreError::Validation(
                "call_timeout must be positive, or None for no limit".into(),
            ));
        }
        Ok(())
    }

    /// The URL with every password replaced by `***` (see
    /// [`opstore_domain::redact::redact_url`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema_name())
            .field("feed_retention", &self.feed_retention)
            .field("feed_poll_interval", &self.feed_poll_interval)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// Schema names are interpolated (quoted) into DDL and `search_path`, so only a
/// conservative identifier syntax is accepted.
pub(crate) fn check_schema_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && name.len() <= 48 {
        return Ok(());
    }
    Err(StoreError::Validation(format!(
        "schema name {name:?} must be 1-48 lower-case ASCII letters, digits or `_`, not starting with a digit"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let cfg = PgConfig::from_url(
            "postgres://app:s3cr%40t@db:5432/ops?sslmode=require&password=other",
        );
        let text = format!("{cfg:?}");
        assert!(!text.contains("s3cr"), "{text}");
        assert!(!text.contains("other"), "{text}");
        assert!(text.contains("postgres://app:***@db:5432/ops"), "{text}");
    }

    #[test]
    fn url_without_password_is_unchanged() {
        assert_eq!(redact_url("postgres://app@db/ops"), "postgres://app@db/ops");
    }

    #[test]
    fn schema_names_are_restricted() {
        assert!(check_schema_name("t_1a").is_ok());
        assert!(check_schema_name("x\"; drop").is_err());
        assert!(check_schema_name("Upper").is_err());
        assert!(check_schema_name("").is_err());
    }
}

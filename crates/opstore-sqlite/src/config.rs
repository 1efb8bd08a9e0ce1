//! Connection configuration.

use std::fmt;
use std::time::Duration;

use opstore_domain::redact::redact_url;
use opstore_domain::{ManualClock, Result, StoreError};

/// Largest document accepted, in bytes of its JSON text, checked before
/// anything is written (SQLite's own limit is 1 GB per value).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The clock that judges leases, idempotency keys, entity TTL and feed history.
#[derive(Debug, Clone, Default)]
pub enum SqliteClock {
    /// The database's clock (`unixepoch('subsec')` in each statement).
    #[default]
    Database,
    /// A clock that tests move by hand; its time is bound into each statement.
    Manual(ManualClock),
}

/// Where the database file is and how the adapter behaves.
///
/// The URL is `sqlite://PATH` (relative to the working directory),
/// `sqlite:///ABSOLUTE/PATH` or `sqlite::memory:` (a private database that lives
/// as long as the store, in a temporary file). A missing file is created.
///
/// ```
/// use std::time::Duration;
/// use opstore_sqlite::SqliteConfig;
///
/// let mut config = SqliteConfig::from_url("sqlite://data/ops.db");
/// config.busy_timeout = Duration::from_secs(10);
/// assert_eq!(config.max_connections, 4);
/// assert!(!config.is_in_memory());
/// assert!(SqliteConfig::from_url("sqlite::memory:").is_in_memory());
/// ```
#[derive(Clone)]
pub struct SqliteConfig {
    /// `sqlite://path/to/file.db`, `sqlite:///abs/file.db` or `sqlite::memory:`.
    pub url: String,
    /// Connections in the read pool (writes use one connection of their own).
    pub max_connections: u32,
    /// How long a call waits for a free connection before `Timeout`.
    pub acquire_timeout: Duration,
    /// How long a statement waits for another process's write lock before
    /// `Timeout` (SQLite's `busy_timeout`).
    pub busy_timeout: Duration,
    /// Change-feed history older than this is purged; resuming from a purged
    /// position is `ResumeTokenExpired`.
    pub feed_retention: Duration,
    /// How often a watcher looks for commits of other processes (commits of
    /// this store wake it at once).
    pub feed_poll_interval: Duration,
    /// The clock that judges expiry.
    pub clock: SqliteClock,
}

impl SqliteConfig {
    /// A configuration for `url` with the documented defaults: 4 connections,
    /// 5 s acquire and busy timeouts, 7 days of feed history, 250 ms polling
    /// for other processes' commits, the database clock.
    pub fn from_url(url: impl Into<String>) -> Self {
        SqliteConfig {
            url: url.into(),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            feed_retention: Duration::from_secs(7 * 24 * 3600),
            feed_poll_interval: Duration::from_millis(250),
            clock: SqliteClock::Database,
        }
    }

    /// Whether the URL names an in-memory database.
    pub fn is_in_memory(&self) -> bool {
        let url = self.url.to_ascii_lowercase();
        url.starts_with("sqlite::memory:")
            || url.starts_with("sqlite://:memory:")
            || url.contains("mode=memory")
    }

    /// Checks the settings before connecting.
    pub(crate) fn check(&self) -> Result<()> {
        if !self.url.to_ascii_lowercase().starts_with("sqlite:") {
            return Err(StoreError::Validation(format!(
                "SQLite URL {} must start with sqlite:// (a file) or be sqlite::memory:",
                self.redacted_url()
            )));
        }
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
        Ok(())
    }

    /// The URL with any password-like parameter replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("feed_retention", &self.feed_retention)
            .field("feed_poll_interval", &self.feed_poll_interval)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_schemes_are_refused_naming_the_form() {
        let err = SqliteConfig::from_url("postgres://db/ops")
            .check()
            .unwrap_err();
        assert!(err.is_validation());
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }

    #[test]
    fn memory_urls_are_recognised() {
        assert!(SqliteConfig::from_url("sqlite::memory:").is_in_memory());
        assert!(!SqliteConfig::from_url("sqlite://ops.db").is_in_memory());
    }
}

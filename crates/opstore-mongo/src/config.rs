//! Connection configuration.

use std::fmt;
use std::time::Duration;

use opstore_domain::ManualClock;
use opstore_domain::redact::redact_url;

/// The clock that judges expiry of leases, idempotency keys and TTL documents.
#[derive(Debug, Clone)]
pub enum ExpiryClock {
    /// The server's clock (`$$NOW`) for leases and idempotency keys; the client's
    /// wall clock hides TTL documents on read until the server's TTL monitor
    /// deletes them. The production setting.
    Server,
    /// The client's wall clock, bound into each query as a date. For servers whose
    /// `$$NOW` comparisons are unreliable (some MongoDB-wire implementations);
    /// keep client clocks synchronised (NTP) when several processes share leases.
    Client,
    /// A manual clock, so tests move time instead of waiting. Every expiry
    /// decision uses it; the server's TTL monitor still deletes by its own clock.
    Manual(ManualClock),
}

/// Configuration of a [`MongoStore`](crate::MongoStore).
///
/// There is no `Default`: the URL and database are decisions. [`MongoConfig::new`]
/// fills the rest with the values documented on each field.
///
/// ```
/// use std::time::Duration;
/// use opstore_mongo::MongoConfig;
///
/// let mut config = MongoConfig::new("mongodb://ops:s3cret@db1:27017,db2:27017/?replicaSet=rs0", "ops");
/// config.feed_retention = Some(Duration::from_secs(24 * 3600));
/// assert_eq!(config.operation_timeout, Duration::from_secs(30));
///
/// // The password stays out of Debug output (and so out of logs).
/// let shown = format!("{config:?}");
/// assert!(shown.contains("ops:***@db1") && !shown.contains("s3cret"), "{shown}");
/// ```
///
/// Connecting (needs a server; transactions and change streams need a replica set):
///
/// ```no_run
/// # async fn connect() -> opstore_domain::Result<()> {
/// use opstore_domain::Store;
/// use opstore_mongo::{MongoConfig, MongoStore};
///
/// let store = MongoStore::connect(MongoConfig::new("mongodb://db1:27017/?replicaSet=rs0", "ops")).await?;
/// println!("transactions: {}", store.capabilities().transactions);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoConfig {
    /// `mongodb://` or `mongodb+srv://` URL. May hold credentials; it is never
    /// printed (`Debug` and errors show [`MongoConfig::redacted_url`]).
    pub url: String,
    /// Database that holds every collection of this store.
    pub database: String,
    /// Time allowed to open a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed to find a usable server (default 10 s).
    pub server_selection_timeout: Duration,
    /// Server-side time limit of a read (`maxTimeMS`, default 30 s).
    pub operation_timeout: Duration,
    /// Change-feed retention on top of the server's oplog (default `None`: the
    /// oplog alone decides). With `Some(age)`, a resume token older than `age`
    /// (by the expiry clock) is `ResumeTokenExpired`, and `StartAt::Beginning`
    /// reaches back at most `age`.
    pub feed_retention: Option<Duration>,
    /// The clock judging expiry (default [`ExpiryClock::Server`]).
    pub clock: ExpiryClock,
}

impl MongoConfig {
    /// A configuration with the default timeouts, feed history and clock.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        MongoConfig {
            url: url.into(),
            database: database.into(),
            connect_timeout: Duration::from_secs(10),
            server_selection_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            feed_retention: None,
            clock: ExpiryClock::Server,
        }
    }

    /// The URL with every password replaced by `***` (see
    /// [`opstore_domain::redact::redact_url`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("url", &self.redacted_url())
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("feed_retention", &self.feed_retention)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_appear_in_debug() {
        let c = MongoConfig::new("mongodb://admin:s3cret@db1:27017,db2/?replicaSet=rs", "ops");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("admin:***@db1:27017,db2/?replicaSet=rs"),
            "{shown}"
        );
        assert_eq!(redact_url("mongodb://h:1/?x=1"), "mongodb://h:1/?x=1");
    }
}

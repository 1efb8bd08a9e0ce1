//! Store configuration from a URL and `OPSTORE_*` environment variables.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use opstore_domain::redact::redact_url;
use opstore_domain::{ManualClock, Result, StoreError};

/// Which backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `memory://`
    Memory,
    /// `postgres://` or `postgresql://`
    Postgres,
    /// `mongodb://` or `mongodb+srv://`
    Mongo,
    /// `scylla://host:9042/keyspace`
    Scylla,
    /// `sqlite://path/to/file.db` or `sqlite::memory:`
    Sqlite,
}

impl Backend {
    /// The Cargo feature of `opstore-app` that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
            Backend::Mongo => "mongo",
            Backend::Scylla => "scylla",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A connection URL whose password never leaves it except to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    raw: String,
    backend: Backend,
}

impl StoreUrl {
    /// Parses and classifies a URL.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        // SQLite names a file (or `:memory:`), not a host, and its in-memory
        // form has no `//`.
        if let Some(rest) = raw
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sqlite:"))
            .and_then(|_| raw.get(7..))
        {
            let path = rest.trim_start_matches("//");
            if path.split('?').next().is_none_or(str::is_empty) {
                return Err(StoreError::Validation(
                    "store URL sqlite:// names no database file; use sqlite://path/to/file.db or sqlite::memory:"
                        .into(),
                ));
            }
            return Ok(StoreUrl {
                raw: raw.to_owned(),
                backend: Backend::Sqlite,
            });
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            // Without a scheme nothing marks where a password would be, so the
            // text is not repeated at all.
            return Err(StoreError::Validation(
                "store URL has no scheme; expected memory://, sqlite://, postgres://, mongodb:// or scylla://"
                    .into(),
            ));
        };
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "memory" | "mem" => Backend::Memory,
            "postgres" | "postgresql" => Backend::Postgres,
            "mongodb" | "mongodb+srv" => Backend::Mongo,
            "scylla" | "cassandra" => Backend::Scylla,
            other => {
                return Err(StoreError::Validation(format!(
                    "unknown store URL scheme `{other}`; expected memory, sqlite, postgres, mongodb or scylla"
                )));
            }
        };
        if backend != Backend::Memory
            && rest
                .split(['/', '?'])
                .next()
                .is_none_or(|h| h.rsplit('@').next() == Some(""))
        {
            return Err(StoreError::Validation(format!(
                "store URL {} names no host",
                redact_url(raw)
            )));
        }
        Ok(StoreUrl {
            raw: raw.to_owned(),
            backend,
        })
    }

    /// The selected backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with credentials, for handing to a driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.raw)
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// TLS files for backends that take them (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle used to verify the server.
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    pub cert_file: Option<PathBuf>,
    /// Client private key.
    pub key_file: Option<PathBuf>,
}

/// Which clock judges expiry of leases, idempotency keys and TTL documents on
/// backends that can evaluate it either way (MongoDB). PostgreSQL always uses the
/// database clock; memory its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExpiryClockSource {
    /// The server's clock (`$$NOW`).
    #[default]
    Server,
    /// This process's clock, bound into each query; for MongoDB-wire servers whose
    /// `$$NOW` comparisons are unreliable. Keep clocks synchronised across processes.
    Client,
}

/// Everything needed to open a store.
///
/// ```
/// use std::time::Duration;
/// use opstore_app::{Backend, StoreConfig};
///
/// let config = StoreConfig::from_url("postgres://app:s3cret@db.internal:5432/ops?sslmode=require")?;
/// assert_eq!(config.url.backend(), Backend::Postgres);
/// // The password reaches the driver only: Debug, Display and logs show `***`.
/// let shown = format!("{config:?} {}", config.url);
/// assert!(shown.contains("app:***@db.internal") && !shown.contains("s3cret"));
///
/// // The same from `OPSTORE_*` variables (here from a map instead of the environment).
/// let vars = [("OPSTORE_URL", "mongodb://db.internal/?replicaSet=rs0"), ("OPSTORE_POOL_SIZE", "32")];
/// let config = StoreConfig::from_lookup(|name| {
///     vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
/// })?;
/// assert_eq!((config.url.backend(), config.pool_size), (Backend::Mongo, 32));
/// assert_eq!(config.operation_timeout, Duration::from_secs(30));
///
/// // Mistakes are validation errors that never echo a password.
/// let err = StoreConfig::from_url("oracle://app:s3cret@db/ops").unwrap_err();
/// assert!(err.is_validation() && !err.to_string().contains("s3cret"));
/// # Ok::<(), opstore_domain::StoreError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where.
    pub url: StoreUrl,
    /// Maximum pooled connections (backends with pools).
    pub pool_size: u32,
    /// Deadline for establishing a connection or taking one from the pool.
    pub connect_timeout: Duration,
    /// Deadline for one operation.
    pub operation_timeout: Duration,
    /// TLS files.
    pub tls: TlsFiles,
    /// Database / schema / keyspace override (else the URL's).
    pub database: Option<String>,
    /// Clock for expiry decisions where the backend offers a choice.
    pub expiry_clock: ExpiryClockSource,
    /// How much change-feed history watchers can resume from; `None` keeps the
    /// backend's default (memory one hour, SQLite and PostgreSQL seven days,
    /// MongoDB the oplog's, ScyllaDB one day).
    pub feed_retention: Option<Duration>,
    /// A clock that tests move by hand instead of waiting: it judges expiry of
    /// leases, idempotency keys, TTL documents and feed history. It overrides
    /// `expiry_clock`. Memory, SQLite and MongoDB honour it; PostgreSQL and
    /// ScyllaDB expire by the server's clock and refuse it with `Validation`.
    pub test_clock: Option<ManualClock>,
}

impl StoreConfig {
    /// A configuration for `url` with the standard pool size and timeouts.
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(StoreConfig {
            url: StoreUrl::parse(url)?,
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            tls: TlsFiles::default(),
            database: None,
            expiry_clock: ExpiryClockSource::Server,
            feed_retention: None,
            test_clock: None,
        })
    }

    /// Reads `OPSTORE_URL` (default `memory://`), `OPSTORE_POOL_SIZE`,
    /// `OPSTORE_CONNECT_TIMEOUT_MS`, `OPSTORE_OPERATION_TIMEOUT_MS`,
    /// `OPSTORE_TLS_CA_FILE`, `OPSTORE_TLS_CERT_FILE`, `OPSTORE_TLS_KEY_FILE`,
    /// `OPSTORE_DATABASE` and `OPSTORE_EXPIRY_CLOCK` (`server` or `client`).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with a custom variable source.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = get("OPSTORE_URL").unwrap_or_else(|| "memory://".to_owned());
        let mut config = Self::from_url(&url)?;
        if let Some(v) = get("OPSTORE_POOL_SIZE") {
            config.pool_size = parse_num("OPSTORE_POOL_SIZE", &v)?;
        }
        if let Some(v) = get("OPSTORE_CONNECT_TIMEOUT_MS") {
            config.connect_timeout =
                Duration::from_millis(parse_num("OPSTORE_CONNECT_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("OPSTORE_OPERATION_TIMEOUT_MS") {
            config.operation_timeout =
                Duration::from_millis(parse_num("OPSTORE_OPERATION_TIMEOUT_MS", &v)?);
        }
        config.tls.ca_file = get("OPSTORE_TLS_CA_FILE").map(PathBuf::from);
        config.tls.cert_file = get("OPSTORE_TLS_CERT_FILE").map(PathBuf::from);
        config.tls.key_file = get("OPSTORE_TLS_KEY_FILE").map(PathBuf::from);
        config.database = get("OPSTORE_DATABASE");
        if let Some(v) = get("OPSTORE_EXPIRY_CLOCK") {
            config.expiry_clock = match v.trim().to_ascii_lowercase().as_str() {
                "server" => ExpiryClockSource::Server,
                "client" => ExpiryClockSource::Client,
                _ => {
                    return Err(StoreError::Validation(format!(
                        "OPSTORE_EXPIRY_CLOCK={v:?} is not `server` or `client`"
                    )));
                }
            };
        }
        if config.pool_size == 0 {
            return Err(StoreError::Validation(
                "OPSTORE_POOL_SIZE must be at least 1".into(),
            ));
        }
        Ok(config)
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| StoreError::Validation(format!("{name}={value:?} is not a valid number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_everywhere() {
        let url =
            StoreUrl::parse("postgres://app:s3cr3t@db:5432/ops?sslmode=require&password=s3cr3t")
                .unwrap();
        for text in [format!("{url:?}"), url.to_string(), url.redacted()] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("app:***@db"), "{text}");
        }
        let config = StoreConfig::from_url(url.expose()).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn schemes_select_backends() {
        assert_eq!(
            StoreUrl::parse("memory://").unwrap().backend(),
            Backend::Memory
        );
        assert_eq!(
            StoreUrl::parse("postgresql://h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            StoreUrl::parse("mongodb://h:27017/?replicaSet=rs")
                .unwrap()
                .backend(),
            Backend::Mongo
        );
        assert_eq!(
            StoreUrl::parse("scylla://h:9042/ks").unwrap().backend(),
            Backend::Scylla
        );
        for url in [
            "sqlite://data/ops.db",
            "sqlite:///var/lib/ops.db",
            "SQLITE::memory:",
        ] {
            assert_eq!(StoreUrl::parse(url).unwrap().backend(), Backend::Sqlite);
        }
        assert!(StoreUrl::parse("sqlite://").is_err());
        let err = StoreUrl::parse("redis://h").unwrap_err();
        assert!(
            err.to_string().contains("unknown store URL scheme `redis`"),
            "{err}"
        );
        assert!(StoreUrl::parse("no-scheme").is_err());
        assert!(StoreUrl::parse("postgres://user:pw@/db").is_err());
    }

    #[test]
    fn env_values_are_checked() {
        let err =
            StoreConfig::from_lookup(|k| (k == "OPSTORE_POOL_SIZE").then(|| "many".to_owned()))
                .unwrap_err();
        assert!(err.to_string().contains("OPSTORE_POOL_SIZE"));
        let config = StoreConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.url.backend(), Backend::Memory);
    }
}

//! Connection and behaviour configuration, from code or a `scylla://` URL.

use std::fmt;
use std::time::Duration;

use opstore_domain::{Result, StoreError};

use crate::tls::TlsOptions;
use crate::value::Consistency;

pub use crate::tls::ScyllaTls;
pub use url::parse_duration;

mod url;

/// The only CQL native protocol version the scylla driver speaks.
pub const SUPPORTED_PROTOCOL_VERSION: u8 = 4;

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the driver's authenticator only.
    pub fn expose(&self) -> String {
        self.0.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Username and password for `PasswordAuthenticator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (printed).
    pub username: String,
    /// Password (never printed).
    pub password: Secret,
}

/// Keyspace replication used by `migrate` and codegen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor (single data centre, tests).
    Simple {
        /// Copies of each row.
        factor: u32,
    },
    /// `NetworkTopologyStrategy` with a factor per data centre, or one for all.
    NetworkTopology {
        /// `(data centre, factor)`; a single `("replication_factor", n)` means n in every DC.
        factors: Vec<(String, u32)>,
    },
}

impl Replication {
    /// The CQL replication map.
    pub fn to_cql(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology { factors } => {
                let dcs: Vec<String> = factors
                    .iter()
                    .map(|(dc, n)| format!("'{dc}': {n}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
            }
        }
    }
}

/// What to do with a filter, sort or aggregate that no key or index serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPolicy {
    /// Refuse with `Unsupported`, naming the index that would serve it.
    Strict,
    /// Scan with `ALLOW FILTERING` and evaluate the rest in process, reading at
    /// most `max_rows` rows; a scan that would read more fails with `Unsupported`.
    Bounded {
        /// Most rows one scan may read.
        max_rows: u64,
    },
}

/// Circuit breaker of the health check (the domain's breaker settings).
pub use opstore_domain::breaker::BreakerConfig;

/// Change-feed polling of the CDC log tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedConfig {
    /// Pause between polls when the last one found nothing new.
    pub poll_interval: Duration,
    /// Changes younger than this are not read yet, so writes still in flight
    /// (coordinator clock skew, slow replicas) land before the window passes them.
    pub confidence_window: Duration,
    /// CDC log retention (the log tables' TTL); older tokens are expired.
    pub retention: Duration,
}

/// Configuration of a [`ScyllaStore`](crate::ScyllaStore).
///
/// No `Default`: hosts and keyspace are decisions. [`ScyllaConfig::new`] fills the
/// rest with the job-automation system's defaults (QUORUM, 30 s timeout, 5
/// retries, protocol 4, health check every 15 s).
#[derive(Clone, PartialEq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub hosts: Vec<String>,
    /// Keyspace holding every table.
    pub keyspace: String,
    /// Optional password authentication.
    pub credentials: Option<Credentials>,
    /// TLS to every node; `None` is plain TCP.
    pub tls: Option<ScyllaTls>,
    /// Replication of the keyspace created by `migrate`.
    pub replication: Replication,
    /// `Some(false)` adds `tablets = {'enabled': false}` to the keyspace (CDC needs
    /// vnodes on ScyllaDB 6+); `None` omits the option (ScyllaDB 5.x).
    pub tablets: Option<bool>,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Client-side time limit of one request.
    pub request_timeout: Duration,
    /// Time `migrate` waits for every node to agree on the schema.
    pub schema_agreement_timeout: Duration,
    /// Retries of an idempotent statement after a transient failure (never LWT).
    pub retries: u32,
    /// Consistency of reads and writes.
    pub consistency: Consistency,
    /// Serial consistency of lightweight transactions and serial reads.
    pub serial_consistency: Consistency,
    /// CQL native protocol version; the driver supports only 4.
    pub protocol_version: u8,
    /// Interval of the background health check.
    pub health_check_interval: Duration,
    /// Circuit breaker of the health check.
    pub breaker: BreakerConfig,
    /// Unserved filters, sorts and aggregates.
    pub scan_policy: ScanPolicy,
    /// Most rows a key or index lookup may return before sorting and windowing
    /// them in process is refused.
    pub max_served_rows: u64,
    /// Rows per page of paged reads.
    pub page_size: i32,
    /// Concurrent statements of `insert_many` and multi-key reads.
    pub write_concurrency: usize,
    /// Prepared statements kept in the cache.
    pub max_prepared_statements: usize,
    /// Change-feed polling.
    pub feed: FeedConfig,
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("hosts", &self.hosts)
            .field("keyspace", &self.keyspace)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| &c.username),
            )
            .field("tls", &self.tls)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("protocol_version", &self.protocol_version)
            .field("scan_policy", &self.scan_policy)
            .finish_non_exhaustive()
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(StoreError::Validation(message.into()))
}

impl ScyllaConfig {
    /// A configuration for `hosts` and `keyspace` with the default settings.
    pub fn new(hosts: &[&str], keyspace: &str) -> Self {
        ScyllaConfig {
            hosts: hosts.iter().map(|h| with_port(h)).collect(),
            keyspace: keyspace.to_owned(),
            credentials: None,
            tls: None,
            replication: Replication::Simple { factor: 1 },
            tablets: Some(false),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            schema_agreement_timeout: Duration::from_secs(60),
            retries: 5,
            consistency: Consistency::Quorum,
            serial_consistency: Consistency::LocalSerial,
            protocol_version: SUPPORTED_PROTOCOL_VERSION,
            health_check_interval: Duration::from_secs(15),
            breaker: BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(30),
            },
            scan_policy: ScanPolicy::Strict,
            max_served_rows: 10_000,
            page_size: 1000,
            write_concurrency: 64,
            max_prepared_statements: 1000,
            feed: FeedConfig {
                poll_interval: Duration::from_millis(250),
                confidence_window: Duration::from_secs(2),
                retention: Duration::from_secs(24 * 3600),
            },
        }
    }

    /// Checks every setting; the message names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return invalid("scylla config: at least one host is required");
        }
        for h in &self.hosts {
            check_host(h).map_err(|m| StoreError::Validation(format!("scylla config: {m}")))?;
        }
        check_identifier("keyspace", &self.keyspace)?;
        if self.protocol_version != SUPPORTED_PROTOCOL_VERSION {
            return invalid(format!(
                "scylla config: protocol version {} is not supported; the scylla driver speaks CQL native protocol v{SUPPORTED_PROTOCOL_VERSION} only",
                self.protocol_version
            ));
        }
        if self.consistency.is_serial() {
            return invalid(format!(
                "scylla config: consistency {:?} is a serial level; use it as serial_consistency",
                self.consistency
            ));
        }
        if !self.serial_consistency.is_serial() {
            return invalid(format!(
                "scylla config: serial_consistency must be SERIAL or LOCAL_SERIAL, not {:?}",
                self.serial_consistency
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("health_check_interval", self.health_check_interval),
            ("feed.poll_interval", self.feed.poll_interval),
        ] {
            if d.is_zero() {
                return invalid(format!("scylla config: {name} must be greater than zero"));
            }
        }
        if self.retries > 100 {
            return invalid("scylla config: retries must be at most 100");
        }
        if self.page_size <= 0 {
            return invalid("scylla config: page_size must be positive");
        }
        if self.write_concurrency == 0 || self.write_concurrency > 4096 {
            return invalid("scylla config: write_concurrency must be 1..=4096");
        }
        if self.breaker.failure_threshold == 0 {
            return invalid("scylla config: breaker.failure_threshold must be at least 1");
        }
        if let ScanPolicy::Bounded { max_rows: 0 } = self.scan_policy {
            return invalid("scylla config: a bounded scan needs max_rows > 0");
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        match &self.replication {
            Replication::Simple { factor: 0 } => {
                return invalid("scylla config: replication factor must be at least 1");
            }
            Replication::NetworkTopology { factors } => {
                if factors.is_empty() {
                    return invalid("scylla config: NetworkTopologyStrategy needs a factor");
                }
                for (dc, _) in factors {
                    if dc.is_empty()
                        || !dc
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return invalid(format!("scylla config: bad data centre name {dc:?}"));
                    }
                }
            }
            Replication::Simple { .. } => {}
        }
        Ok(())
    }

    /// The contact points for messages (no credentials).
    pub fn describe(&self) -> String {
        format!("scylla://{}/{}", self.hosts.join(","), self.keyspace)
    }
}

/// Checks a CQL identifier used unquoted (keyspace, table): 1-48 of `[A-Za-z0-9_]`,
/// starting with a letter.
pub fn check_identifier(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "invalid {kind} name {name:?}: use 1-48 of [A-Za-z0-9_], starting with a letter"
        ))
    }
}

fn with_port(host: &str) -> String {
    if host.starts_with('[') {
        if host.contains("]:") {
            host.to_owned()
        } else {
            format!("{host}:9042")
        }
    } else if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:9042")
    }
}

fn check_host(host: &str) -> std::result::Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() && !n.ends_with(':') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    if !name_ok {
        return Err(format!("bad host {host:?}"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("bad port in host {host:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

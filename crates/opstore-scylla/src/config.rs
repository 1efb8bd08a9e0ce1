//! Connection and behaviour configuration, from code or a `scylla://` URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use opstore_domain::redact::redact_url;
use opstore_domain::{Result, StoreError};

use crate::tls::TlsOptions;
use crate::value::Consistency;

pub use crate::tls::ScyllaTls;

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

    /// Parses `scylla://[user[:password]@]host[:port][,host[:port]...]/keyspace[?options]`.
    ///
    /// Options: `consistency`, `serial_consistency`, `timeout` and
    /// `connect_timeout` (`500ms`, `30s`), `retries`, `protocol_version`,
    /// `health_check_interval`, `replication_factor`, `scan` (`strict` or
    /// `bounded:N`), `tablets` (`off`, `on`, `default`), and TLS: `tls`
    /// (`true`/`false`), `tls_ca_file`, `tls_cert_file`, `tls_key_file`,
    /// `tls_server_name`, `tls_verify_hostname` (`true` by default); any TLS file
    /// option turns TLS on. Errors never repeat the password.
    pub fn from_url(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let Some(rest) = url.strip_prefix("scylla://") else {
            return invalid(format!("`{shown}` is not a scylla:// URL"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, keyspace) = match rest.split_once('/') {
            Some((a, k)) => (a, k),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if keyspace.is_empty() {
            return invalid(format!(
                "`{shown}` names no keyspace: use scylla://host:9042/keyspace"
            ));
        }
        let host_list: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        if host_list.is_empty() {
            return invalid(format!("`{shown}` names no host"));
        }
        for h in &host_list {
            check_host(h).map_err(|m| StoreError::Validation(format!("`{shown}`: {m}")))?;
        }
        let mut config = ScyllaConfig::new(&host_list, &percent_decode(keyspace));
        if let Some(info) = userinfo {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            config.credentials = Some(Credentials {
                username: percent_decode(user),
                password: Secret::new(percent_decode(pass)),
            });
        }
        let mut tls = TlsOptions::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            config
                .apply_option(k, &percent_decode(v), &mut tls)
                .map_err(|m| StoreError::Validation(format!("`{shown}`: {m}")))?;
        }
        config.tls = tls
            .finish()
            .map_err(|m| StoreError::Validation(format!("`{shown}`: {m}")))?;
        config.validate()?;
        Ok(config)
    }

    fn apply_option(
        &mut self,
        key: &str,
        value: &str,
        tls: &mut TlsOptions,
    ) -> std::result::Result<(), String> {
        let consistency = |v: &str| {
            Consistency::parse(v).ok_or_else(|| format!("unknown consistency level `{v}`"))
        };
        match key {
            "consistency" => self.consistency = consistency(value)?,
            "serial_consistency" => self.serial_consistency = consistency(value)?,
            "timeout" | "request_timeout" => self.request_timeout = parse_duration(value)?,
            "connect_timeout" => self.connect_timeout = parse_duration(value)?,
            "health_check_interval" => self.health_check_interval = parse_duration(value)?,
            "retries" => self.retries = parse_num(key, value)?,
            "protocol_version" => self.protocol_version = parse_num(key, value)?,
            "replication_factor" => {
                self.replication = Replication::Simple {
                    factor: parse_num(key, value)?,
                }
            }
            "page_size" => self.page_size = parse_num(key, value)?,
            "tablets" => {
                self.tablets = match value {
                    "off" | "false" => Some(false),
                    "on" | "true" => Some(true),
                    "default" => None,
                    _ => return Err(format!("tablets must be off, on or default, not `{value}`")),
                }
            }
            "scan" => {
                self.scan_policy = match value.split_once(':') {
                    None if value == "strict" => ScanPolicy::Strict,
                    Some(("bounded", n)) => ScanPolicy::Bounded {
                        max_rows: parse_num("scan", n)?,
                    },
                    _ => return Err(format!("scan must be strict or bounded:N, not `{value}`")),
                }
            }
            "tls" => tls.enabled = Some(parse_bool(key, value)?),
            "tls_ca_file" => tls.ca_file = Some(parse_path(key, value)?),
            "tls_cert_file" => tls.cert_file = Some(parse_path(key, value)?),
            "tls_key_file" => tls.key_file = Some(parse_path(key, value)?),
            "tls_verify_hostname" => tls.verify_server_name = Some(parse_bool(key, value)?),
            "tls_server_name" => {
                if value.is_empty() {
                    return Err("option `tls_server_name` needs a host name".into());
                }
                tls.server_name = Some(value.to_owned());
            }
            other => return Err(format!("unknown option `{other}`")),
        }
        Ok(())
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

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> std::result::Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("option `{key}` needs a number, got `{value}`"))
}

fn parse_bool(key: &str, value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "option `{key}` must be true or false, not `{value}`"
        )),
    }
}

fn parse_path(key: &str, value: &str) -> std::result::Result<PathBuf, String> {
    if value.is_empty() || value.contains('\0') {
        return Err(format!("option `{key}` needs a file path"));
    }
    Ok(PathBuf::from(value))
}

/// Parses `250ms`, `30s`, `2m` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("bad duration `{text}`: use e.g. 500ms, 30s, 2m");
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "ms"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(text.get(i + 1..i + 3).unwrap_or(""), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_hosts_credentials_and_options_parses() {
        let c = ScyllaConfig::from_url(
            "scylla://ops:s3cr%40t@node1:9042,node2/jobs?consistency=local_quorum&timeout=5s&retries=2&scan=bounded:500",
        )
        .unwrap();
        assert_eq!(c.hosts, vec!["node1:9042", "node2:9042"]);
        assert_eq!(c.keyspace, "jobs");
        let creds = c.credentials.as_ref().unwrap();
        assert_eq!(creds.username, "ops");
        assert_eq!(creds.password.expose(), "s3cr@t");
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.retries, 2);
        assert_eq!(c.scan_policy, ScanPolicy::Bounded { max_rows: 500 });
    }

    #[test]
    fn defaults_follow_the_job_automation_system() {
        let c = ScyllaConfig::from_url("scylla://localhost/opstore").unwrap();
        assert_eq!(c.consistency, Consistency::Quorum);
        assert_eq!(c.serial_consistency, Consistency::LocalSerial);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.retries, 5);
        assert_eq!(c.protocol_version, 4);
        assert_eq!(c.health_check_interval, Duration::from_secs(15));
        assert_eq!(c.scan_policy, ScanPolicy::Strict);
    }

    #[test]
    fn bad_urls_are_validation_errors() {
        for (url, needle) in [
            ("postgres://h/ks", "not a scylla:// URL"),
            ("scylla://h:9042", "names no keyspace"),
            ("scylla:///ks", "names no host"),
            ("scylla://h:99999/ks", "bad port"),
            ("scylla://h:0/ks", "bad port"),
            ("scylla://h/ks-1", "invalid keyspace name"),
            ("scylla://h/1ks", "invalid keyspace name"),
            ("scylla://h/ks?consistency=most", "unknown consistency"),
            ("scylla://h/ks?consistency=serial", "serial level"),
            (
                "scylla://h/ks?serial_consistency=quorum",
                "SERIAL or LOCAL_SERIAL",
            ),
            ("scylla://h/ks?timeout=soon", "bad duration"),
            ("scylla://h/ks?timeout=0s", "greater than zero"),
            ("scylla://h/ks?colour=blue", "unknown option"),
            ("scylla://h/ks?scan=bounded:0", "max_rows > 0"),
            ("scylla://h/ks?scan=everything", "strict or bounded"),
        ] {
            let err = ScyllaConfig::from_url(url).unwrap_err();
            assert!(err.is_validation(), "{url}: {err}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn protocol_versions_other_than_4_are_rejected() {
        for v in ["3", "5", "65"] {
            let err =
                ScyllaConfig::from_url(&format!("scylla://h/ks?protocol_version={v}")).unwrap_err();
            assert!(err.to_string().contains("protocol version"), "{err}");
            assert!(err.to_string().contains("v4 only"), "{err}");
        }
        assert!(ScyllaConfig::from_url("scylla://h/ks?protocol_version=4").is_ok());
        assert!(
            ScyllaConfig::from_url("scylla://h/ks?protocol_version=four")
                .unwrap_err()
                .is_validation()
        );
    }

    #[test]
    fn credentials_never_appear_in_debug_or_errors() {
        let c = ScyllaConfig::from_url("scylla://admin:hunter2@h/ks").unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("admin"));
        let err = ScyllaConfig::from_url("scylla://admin:hunter2@h/ks?bogus=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("admin:***@h"), "{err}");
        assert!(!c.describe().contains("hunter2"));
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn tls_is_off_unless_asked_for() {
        assert_eq!(ScyllaConfig::from_url("scylla://h/ks").unwrap().tls, None);
        assert_eq!(
            ScyllaConfig::from_url("scylla://h/ks?tls=false")
                .unwrap()
                .tls,
            None
        );
    }

    #[test]
    fn tls_options_parse_with_server_name_verification_on_by_default() {
        let ca = fixture("ca.pem");
        let c =
            ScyllaConfig::from_url(&format!("scylla://h/ks?tls=true&tls_ca_file={ca}")).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls, ScyllaTls::new(&ca));
        assert!(tls.verify_server_name);

        // A file option alone turns TLS on; values are percent-decoded.
        let (cert, key) = (fixture("client.pem"), fixture("client.key"));
        let c = ScyllaConfig::from_url(&format!(
            "scylla://h/ks?tls_cert_file={cert}&tls_key_file={key}&tls_ca_file={}&tls_server_name=db.example.com",
            ca.replace('/', "%2F")
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca_file, PathBuf::from(&ca));
        assert_eq!(tls.cert_file, Some(PathBuf::from(&cert)));
        assert_eq!(tls.key_file, Some(PathBuf::from(&key)));
        assert_eq!(tls.server_name.as_deref(), Some("db.example.com"));
        assert!(tls.verify_server_name);

        let c = ScyllaConfig::from_url(&format!(
            "scylla://h/ks?tls_ca_file={ca}&tls_verify_hostname=false"
        ))
        .unwrap();
        assert!(!c.tls.unwrap().verify_server_name);
    }

    #[test]
    fn bad_tls_options_are_validation_errors_naming_the_option() {
        let ca = fixture("ca.pem");
        let cert = fixture("client.pem");
        let key = fixture("client.key");
        let missing = fixture("missing.pem");
        for (query, needle) in [
            ("tls=maybe".to_owned(), "option `tls` must be true or false"),
            ("tls=true".to_owned(), "TLS needs `tls_ca_file`"),
            (
                format!("tls_cert_file={cert}&tls_key_file={key}"),
                "TLS needs `tls_ca_file`",
            ),
            (
                format!("tls=false&tls_ca_file={ca}"),
                "`tls=false` contradicts `tls_ca_file`",
            ),
            (
                "tls_ca_file=".to_owned(),
                "option `tls_ca_file` needs a file path",
            ),
            (
                format!("tls_ca_file={ca}&tls_verify_hostname=yes"),
                "option `tls_verify_hostname` must be true or false",
            ),
            (
                format!("tls_ca_file={ca}&tls_server_name="),
                "option `tls_server_name` needs a host name",
            ),
            (
                format!("tls_ca_file={ca}&tls_server_name=bad%20name"),
                "tls_server_name \"bad name\" is not a DNS name",
            ),
            (
                format!("tls_ca_file={ca}&tls_server_name=db&tls_verify_hostname=false"),
                "tls_server_name has no effect",
            ),
            (format!("tls_ca_file={missing}"), "tls_ca_file `"),
            (format!("tls_ca_file={key}"), "holds no PEM certificate"),
            (
                format!("tls_ca_file={ca}&tls_cert_file={cert}"),
                "tls_cert_file needs tls_key_file",
            ),
            (
                format!("tls_ca_file={ca}&tls_key_file={key}"),
                "tls_key_file needs tls_cert_file",
            ),
            (
                format!("tls_ca_file={ca}&tls_cert_file={missing}&tls_key_file={key}"),
                "tls_cert_file `",
            ),
            (
                format!("tls_ca_file={ca}&tls_cert_file={cert}&tls_key_file={missing}"),
                "tls_key_file `",
            ),
            (
                format!("tls_ca_file={ca}&tls_cert_file={cert}&tls_key_file={ca}"),
                "holds no PEM private key",
            ),
        ] {
            let url = format!("scylla://admin:hunter2@h/ks?{query}");
            let err = ScyllaConfig::from_url(&url).unwrap_err();
            assert!(err.is_validation(), "{query}: {err}");
            assert!(err.to_string().contains(needle), "{query}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{query}: {err}");
        }
        // A missing file is named with its path and the reason.
        let err =
            ScyllaConfig::from_url(&format!("scylla://h/ks?tls_ca_file={missing}")).unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");
    }

    #[test]
    fn tls_set_in_code_is_checked_by_validate() {
        let mut c = ScyllaConfig::new(&["h"], "ks");
        c.tls = Some(ScyllaTls::new(fixture("nowhere/ca.pem")));
        let err = c.validate().unwrap_err();
        assert!(err.is_validation(), "{err}");
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
        let mut tls = ScyllaTls::new(fixture("ca.pem"));
        tls.cert_file = Some(fixture("client.pem").into());
        tls.key_file = Some(fixture("client.key").into());
        c.tls = Some(tls);
        c.validate().unwrap();
    }

    #[test]
    fn tls_debug_and_errors_show_paths_but_no_key_material() {
        let key_text = std::fs::read_to_string(fixture("client.key")).unwrap();
        let key_body = key_text.lines().nth(1).unwrap();
        let url = format!(
            "scylla://admin:hunter2@h/ks?tls_ca_file={}&tls_cert_file={}&tls_key_file={}",
            fixture("ca.pem"),
            fixture("client.pem"),
            fixture("client.key")
        );
        let c = ScyllaConfig::from_url(&url).unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("client.key"), "{debug}");
        assert!(
            !debug.contains("hunter2") && !debug.contains(key_body),
            "{debug}"
        );
        // A key given where the certificate belongs is refused without echoing it.
        let url = url.replace("client.pem", "client.key");
        let err = ScyllaConfig::from_url(&url).unwrap_err();
        assert!(err.is_validation(), "{err}");
        assert!(!err.to_string().contains(key_body), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn replication_renders_as_cql() {
        assert_eq!(
            Replication::Simple { factor: 3 }.to_cql(),
            "{'class': 'SimpleStrategy', 'replication_factor': 3}"
        );
        assert_eq!(
            Replication::NetworkTopology {
                factors: vec![("dc1".into(), 3), ("dc2".into(), 2)]
            }
            .to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        let mut c = ScyllaConfig::new(&["h"], "ks");
        c.replication = Replication::NetworkTopology {
            factors: vec![("dc'1".into(), 3)],
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("data centre")
        );
    }
}

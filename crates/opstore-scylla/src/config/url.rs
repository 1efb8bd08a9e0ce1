//! `scylla://` URLs: hosts, credentials, keyspace and options.

use std::path::PathBuf;
use std::time::Duration;

use opstore_domain::redact::redact_url;
use opstore_domain::{Result, StoreError};

use super::*;

impl ScyllaConfig {
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

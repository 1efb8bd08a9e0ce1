//! URL parsing, validation and redaction of [`ScyllaConfig`].

use std::path::PathBuf;

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
    let c = ScyllaConfig::from_url(&format!("scylla://h/ks?tls=true&tls_ca_file={ca}")).unwrap();
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
    let err = ScyllaConfig::from_url(&format!("scylla://h/ks?tls_ca_file={missing}")).unwrap_err();
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

//! The real driver path up to the connection attempt, without a server.

use std::time::Duration;

use opstore_scylla::{ScyllaConfig, ScyllaStore};

#[tokio::test]
async fn closed_loopback_port_is_a_connection_error() {
    // Bind then drop a listener so the port is known to be closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = ScyllaConfig::from_url(&format!("scylla://u:pw@127.0.0.1:{port}/ks")).unwrap();
    config.connect_timeout = Duration::from_secs(2);
    let err = ScyllaStore::connect(config).await.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[tokio::test]
async fn tls_to_a_closed_loopback_port_is_a_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let mut config = ScyllaConfig::from_url(&format!(
        "scylla://u:pw@127.0.0.1:{port}/ks?tls_ca_file={fixtures}/ca.pem&tls_cert_file={fixtures}/client.pem&tls_key_file={fixtures}/client.key"
    ))
    .unwrap();
    assert!(config.tls.is_some());
    config.connect_timeout = Duration::from_secs(2);
    let err = ScyllaStore::connect(config).await.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

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

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// A loopback TLS listener with the fixture certificate `name` (`server`: for
/// `127.0.0.1` and `node.test`; `elsewhere`: for `elsewhere.test` only). It reports, for
/// each connection, whether the TLS handshake completed (the client trusted the
/// certificate), then closes the connection, so the driver fails after TLS.
fn tls_listener(name: &str) -> (u16, std::sync::mpsc::Receiver<bool>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_file_iter(format!("{FIXTURES}/{name}.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/{name}.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread ends with the test binary; it only ever serves loopback clients.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { return };
            let mut conn = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let mut completed = false;
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    break;
                }
                completed = !conn.is_handshaking();
            }
            if tx.send(completed).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Connects with `options` to a fresh listener presenting certificate `name`;
/// returns the error and whether any handshake completed.
async fn connect_tls_to(name: &str, options: &str) -> (opstore_domain::StoreError, bool) {
    let (port, handshakes) = tls_listener(name);
    let mut config =
        ScyllaConfig::from_url(&format!("scylla://127.0.0.1:{port}/ks?{options}")).unwrap();
    config.connect_timeout = Duration::from_secs(2);
    let err = ScyllaStore::connect(config).await.unwrap_err();
    let completed = handshakes.try_iter().any(|ok| ok);
    (err, completed)
}

async fn connect_tls(options: &str) -> (opstore_domain::StoreError, bool) {
    connect_tls_to("server", options).await
}

#[tokio::test]
async fn tls_verifies_the_node_address_by_default_and_can_skip_only_the_name() {
    let ca = format!("{FIXTURES}/ca.pem");
    let (err, completed) = connect_tls_to("elsewhere", &format!("tls_ca_file={ca}")).await;
    assert!(
        !completed,
        "a certificate that does not name 127.0.0.1 was accepted"
    );
    assert!(err.is_connection(), "{err}");
    let (_, completed) = connect_tls_to(
        "elsewhere",
        &format!("tls_ca_file={ca}&tls_verify_hostname=false"),
    )
    .await;
    assert!(completed, "with name checks off, a trusted chain is enough");
    let (_, completed) = connect_tls_to(
        "elsewhere",
        &format!("tls_ca_file={ca}&tls_server_name=elsewhere.test"),
    )
    .await;
    assert!(completed, "the certificate names elsewhere.test");
}

#[tokio::test]
async fn tls_trusts_a_node_certificate_signed_by_the_configured_ca() {
    let (err, completed) = connect_tls(&format!("tls_ca_file={FIXTURES}/ca.pem")).await;
    assert!(
        completed,
        "the handshake with the node's address should succeed"
    );
    // The listener speaks no CQL after TLS, so the session still fails to open.
    assert!(err.is_connection(), "{err}");
}

#[tokio::test]
async fn tls_refuses_a_node_certificate_from_another_ca() {
    let (err, completed) = connect_tls(&format!("tls_ca_file={FIXTURES}/other-ca.pem")).await;
    assert!(
        !completed,
        "a certificate from an untrusted CA was accepted"
    );
    assert!(err.is_connection(), "{err}");
}

#[tokio::test]
async fn tls_checks_the_configured_server_name() {
    let ca = format!("{FIXTURES}/ca.pem");
    let (_, completed) = connect_tls(&format!("tls_ca_file={ca}&tls_server_name=node.test")).await;
    assert!(completed, "the certificate names node.test");
    let (err, completed) =
        connect_tls(&format!("tls_ca_file={ca}&tls_server_name=other.test")).await;
    assert!(!completed, "a certificate for another name was accepted");
    assert!(err.is_connection(), "{err}");
    let (_, completed) = connect_tls(&format!(
        "tls_ca_file={FIXTURES}/other-ca.pem&tls_verify_hostname=false"
    ))
    .await;
    assert!(
        !completed,
        "turning off name checks must still verify the chain"
    );
}

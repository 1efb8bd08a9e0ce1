//! TLS to the cluster over rustls: the settings ([`ScyllaTls`]), their URL
//! options, and the client configuration with a certificate verifier whose name
//! check follows the settings. Errors name the option and the path, never file
//! contents.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use opstore_domain::{Result, StoreError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// TLS on every connection to the cluster (rustls).
///
/// The driver connects to each node by its IP address, so by default a node's
/// certificate must name that address; [`ScyllaTls::server_name`] checks one
/// shared name instead. Only paths are kept here: the key file is read when the
/// session is built and never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaTls {
    /// PEM file of the CA certificates that sign the nodes' certificates.
    pub ca_file: PathBuf,
    /// PEM certificate chain presented to the nodes (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Whether a node's certificate must name the node (on by default). Off still
    /// checks the chain up to `ca_file`.
    pub verify_server_name: bool,
    /// The name every node's certificate must carry, instead of the node's address.
    pub server_name: Option<String>,
}

impl ScyllaTls {
    /// TLS verified against the CA in `ca_file`, without a client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        ScyllaTls {
            ca_file: ca_file.into(),
            cert_file: None,
            key_file: None,
            verify_server_name: true,
            server_name: None,
        }
    }

    /// Checks the settings and that every file is readable PEM of the right kind;
    /// the message names the URL option and the path.
    pub fn validate(&self) -> Result<()> {
        client_config(self).map(drop)
    }
}

/// TLS options as they arrive from a URL, in any order.
#[derive(Default)]
pub(crate) struct TlsOptions {
    pub(crate) enabled: Option<bool>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) verify_server_name: Option<bool>,
    pub(crate) server_name: Option<String>,
}

impl TlsOptions {
    /// The first file or verification option given, for messages.
    fn first_set(&self) -> Option<&'static str> {
        [
            ("tls_ca_file", self.ca_file.is_some()),
            ("tls_cert_file", self.cert_file.is_some()),
            ("tls_key_file", self.key_file.is_some()),
            ("tls_verify_hostname", self.verify_server_name.is_some()),
            ("tls_server_name", self.server_name.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    pub(crate) fn finish(self) -> std::result::Result<Option<ScyllaTls>, String> {
        let wanted = match (self.enabled, self.first_set()) {
            (Some(false), Some(option)) => {
                return Err(format!("`tls=false` contradicts `{option}`"));
            }
            (Some(enabled), _) => enabled,
            (None, first) => first.is_some(),
        };
        if !wanted {
            return Ok(None);
        }
        let Some(ca_file) = self.ca_file else {
            return Err(
                "TLS needs `tls_ca_file`: the PEM file of the CA that signs the nodes' certificates"
                    .into(),
            );
        };
        Ok(Some(ScyllaTls {
            ca_file,
            cert_file: self.cert_file,
            key_file: self.key_file,
            verify_server_name: self.verify_server_name.unwrap_or(true),
            server_name: self.server_name,
        }))
    }
}

fn tls_error(option: &str, path: &std::path::Path, detail: impl fmt::Display) -> StoreError {
    StoreError::Validation(format!(
        "scylla config: {option} `{}`: {detail}",
        path.display()
    ))
}

/// Builds the rustls client configuration of `tls`, reading its PEM files. Errors
/// are `Validation` naming the URL option and the path, never file contents.
pub(crate) fn client_config(tls: &ScyllaTls) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&tls.ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    if cas.is_empty() {
        return Err(tls_error(
            "tls_ca_file",
            &tls.ca_file,
            "holds no PEM certificate",
        ));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| tls_error("tls_ca_file", &tls.ca_file, e))?;
    let name = match (&tls.server_name, tls.verify_server_name) {
        (Some(_), false) => {
            return Err(StoreError::Validation(
                "scylla config: tls_server_name has no effect with tls_verify_hostname=false"
                    .into(),
            ));
        }
        (Some(name), true) => {
            NameCheck::Fixed(ServerName::try_from(name.clone()).map_err(|_| {
                StoreError::Validation(format!(
                    "scylla config: tls_server_name {name:?} is not a DNS name or IP address"
                ))
            })?)
        }
        (None, true) => NameCheck::NodeAddress,
        (None, false) => NameCheck::Off,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Validation(format!("scylla config: TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier {
            inner: webpki,
            name,
        }));
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(StoreError::Validation(
            "scylla config: tls_cert_file needs tls_key_file (the certificate's private key)"
                .into(),
        )),
        (None, Some(_)) => Err(StoreError::Validation(
            "scylla config: tls_key_file needs tls_cert_file (the client certificate)".into(),
        )),
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_error("tls_cert_file", cert_file, e))?;
            if chain.is_empty() {
                return Err(tls_error(
                    "tls_cert_file",
                    cert_file,
                    "holds no PEM certificate",
                ));
            }
            // The parser's message never includes key material.
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    tls_error("tls_key_file", key_file, "holds no PEM private key")
                }
                other => tls_error("tls_key_file", key_file, other),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("tls_key_file", key_file, e))
        }
    }
}

/// Which name a node's certificate must carry.
#[derive(Debug)]
enum NameCheck {
    /// The address the driver connected to.
    NodeAddress,
    /// One name shared by every node.
    Fixed(ServerName<'static>),
    /// Any name; the chain is still verified.
    Off,
}

/// The WebPKI verifier with the name check chosen by configuration.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: NameCheck,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.name {
            NameCheck::Fixed(name) => name,
            NameCheck::NodeAddress | NameCheck::Off => server_name,
        };
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        match (&self.name, verdict) {
            // WebPKI checks the name only after the chain, so this error means the
            // chain itself was trusted.
            (
                NameCheck::Off,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )),
            ) => Ok(ServerCertVerified::assertion()),
            (_, verdict) => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

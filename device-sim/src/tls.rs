//! MQTT over TLS for simulated devices: which server certificate a device trusts, and the
//! client certificate it may log in with instead of its key.
//!
//! A device with a [`ClientCertificate`] presents it in the TLS handshake and sends CONNECT
//! with no username or password: the broker's authenticator judges the certificate (its CA,
//! its validity, whether it is revoked, and that its common name is the device id). A device
//! without one sends its id and key as before, over TLS.
//!
//! Devices without a certificate share one client configuration (and its TLS session cache);
//! each device with a certificate has its own, with a session cache of its own, so that no
//! device resumes a TLS session another device's certificate opened.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::{Resumption, WebPkiServerVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::SimError;

/// TLS sessions a device with its own certificate remembers for resumption (one broker).
const DEVICE_SESSION_CACHE: usize = 2;

/// The server certificate (or the CA that issued it) devices trust, and the name they expect
/// it to carry.
#[derive(Clone)]
pub struct TrustedServer {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TrustedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedServer")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TrustedServer {
    /// Trusts the certificates in `ca_pem` (e.g. the server's generated
    /// `<data-dir>/tls/mqtt-cert.pem`, or a real CA) for a server known as `server_name`.
    pub fn from_pem(ca_pem: &[u8], server_name: ServerName<'static>) -> Result<Self, SimError> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            let certificate = certificate.map_err(|e| SimError::Tls(format!("CA: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| SimError::Tls(format!("CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(SimError::Tls("no certificate in the CA PEM data".into()));
        }
        let provider = Arc::new(aws_lc_rs::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| SimError::Tls(format!("CA: {e}")))?;
        Ok(TrustedServer {
            verifier,
            provider,
            server_name,
        })
    }

    /// [`from_pem`](Self::from_pem) reading `path`.
    pub fn from_file(path: &Path, server_name: ServerName<'static>) -> Result<Self, SimError> {
        TrustedServer::from_pem(&read(path)?, server_name)
    }

    /// The name a server at `ip` is checked against when no other is given: its address.
    pub fn name_of(ip: IpAddr) -> ServerName<'static> {
        ServerName::IpAddress(ip.into())
    }

    /// Parses a DNS name or an IP address, as the server certificate names it.
    pub fn parse_name(name: &str) -> Result<ServerName<'static>, SimError> {
        ServerName::try_from(name.to_owned())
            .map_err(|e| SimError::Tls(format!("server name `{name}`: {e}")))
    }

    fn builder(
        &self,
    ) -> Result<
        tokio_rustls::rustls::ConfigBuilder<
            ClientConfig,
            tokio_rustls::rustls::client::WantsClientCert,
        >,
        SimError,
    > {
        Ok(
            ClientConfig::builder_with_provider(Arc::clone(&self.provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| SimError::Tls(e.to_string()))?
                .with_webpki_verifier(Arc::clone(&self.verifier)),
        )
    }
}

/// A device's certificate chain (leaf first) and private key, to log in with instead of its
/// key.
pub struct ClientCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ClientCertificate")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Parses a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1), as the REST API hands out a device certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientCertificate, SimError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SimError::Tls(format!("client certificate: {e}")))?;
        if chain.is_empty() {
            return Err(SimError::Tls(
                "no client certificate in the PEM data".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| SimError::Tls(format!("client key: {e}")))?;
        Ok(ClientCertificate { chain, key })
    }

    /// Reads a PEM certificate chain and key from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ClientCertificate, SimError> {
        ClientCertificate::from_pem(&read(cert)?, &read(key)?)
    }

    /// Device `device_id`'s certificate in `dir` (`<device_id>.pem` and `<device_id>.key`),
    /// or `None` when the directory has no certificate for it.
    pub fn from_dir(dir: &Path, device_id: &str) -> Result<Option<ClientCertificate>, SimError> {
        let cert = dir.join(format!("{device_id}.pem"));
        if !cert.exists() {
            return Ok(None);
        }
        let key = dir.join(format!("{device_id}.key"));
        ClientCertificate::from_files(&cert, &key).map(Some)
    }
}

/// How one device speaks TLS to the broker: built once per device (or once for all devices
/// without a certificate) and cloned cheaply.
#[derive(Clone)]
pub struct DeviceTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    with_certificate: bool,
}

impl fmt::Debug for DeviceTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTls")
            .field("server_name", &self.server_name)
            .field("with_certificate", &self.with_certificate)
            .finish_non_exhaustive()
    }
}

impl DeviceTls {
    /// TLS for devices that log in with their id and key; share it between them.
    pub fn with_key(server: &TrustedServer) -> Result<DeviceTls, SimError> {
        let config = server.builder()?.with_no_client_auth();
        Ok(DeviceTls::new(server, config, false))
    }

    /// TLS for the one device `certificate` was issued to; it logs in without its key.
    pub fn with_certificate(
        server: &TrustedServer,
        certificate: ClientCertificate,
    ) -> Result<DeviceTls, SimError> {
        let mut config = server
            .builder()?
            .with_client_auth_cert(certificate.chain, certificate.key)
            .map_err(|e| SimError::Tls(format!("client certificate: {e}")))?;
        config.resumption = Resumption::in_memory_sessions(DEVICE_SESSION_CACHE);
        Ok(DeviceTls::new(server, config, true))
    }

    fn new(server: &TrustedServer, config: ClientConfig, with_certificate: bool) -> DeviceTls {
        DeviceTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: server.server_name.clone(),
            with_certificate,
        }
    }

    /// Whether the device logs in with a client certificate (CONNECT without username and
    /// password).
    pub fn with_certificate_login(&self) -> bool {
        self.with_certificate
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SimError> {
    std::fs::read(path).map_err(|e| SimError::Tls(format!("{}: {e}", path.display())))
}

//! The MQTT-over-TLS listener's identity: a certificate chain and its private key, from PEM
//! files or generated (self-signed, with rcgen) on first start and kept for the next. The
//! listener asks clients for a certificate without requiring one (`client_certificate`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BrokerError;
use crate::client_certificate::CertificateRequest;

/// File names of a generated identity inside its directory.
const CERT_FILE: &str = "mqtt-cert.pem";
const KEY_FILE: &str = "mqtt-key.pem";

/// The server certificate (chain) and key the TLS listener presents.
#[derive(Clone)]
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    cert_pem: String,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Parses a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, BrokerError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::Tls(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(BrokerError::Tls("no certificate in the PEM data".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| BrokerError::Tls(format!("private key: {e}")))?;
        let identity = TlsIdentity {
            certs,
            key: Arc::new(key),
            cert_pem: String::from_utf8_lossy(cert_pem).into_owned(),
        };
        // Fail now, not on the first handshake.
        identity.acceptor()?;
        Ok(identity)
    }

    /// Reads a PEM certificate chain and key from files (e.g. from a real CA).
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, BrokerError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| BrokerError::Tls(format!("{}: {e}", path.display())))
        };
        TlsIdentity::from_pem(&read(cert)?, &read(key)?)
    }

    /// The identity kept in `dir` (`mqtt-cert.pem`, `mqtt-key.pem`); on first use a
    /// self-signed certificate for `names` (DNS names or IP addresses) is generated and
    /// written there, the key readable by the owner only. Clients must trust that
    /// certificate explicitly ([`certificate_pem`](Self::certificate_pem)).
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<TlsIdentity, BrokerError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return TlsIdentity::from_files(&cert_path, &key_path);
        }
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| BrokerError::Tls(format!("generating a certificate: {e}")))?;
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        let io = |path: &PathBuf, e: std::io::Error| {
            BrokerError::Tls(format!("writing {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(&dir.to_path_buf(), e))?;
        write_private(&key_path, key_pem.as_bytes()).map_err(|e| io(&key_path, e))?;
        std::fs::write(&cert_path, cert_pem.as_bytes()).map_err(|e| io(&cert_path, e))?;
        tracing::info!(path = %cert_path.display(), ?names, "generated a self-signed MQTT TLS certificate");
        TlsIdentity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
    }

    /// The certificate chain in PEM, for clients that must trust a self-signed certificate.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, BrokerError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let client_certificates = Arc::new(CertificateRequest::new(&provider));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BrokerError::Tls(e.to_string()))?
            .with_client_cert_verifier(client_certificates)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| BrokerError::Tls(e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_is_kept_and_reused_and_bad_pem_is_an_error() {
        let dir = std::env::temp_dir().join(format!("fleetmq-tls-{}", uuid::Uuid::new_v4()));
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = TlsIdentity::load_or_generate(&dir, &names).unwrap();
        let again = TlsIdentity::load_or_generate(&dir, &names).unwrap();
        assert_eq!(first.certificate_pem(), again.certificate_pem());
        assert!(
            first
                .certificate_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(TlsIdentity::from_pem(b"not pem", b"not pem").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

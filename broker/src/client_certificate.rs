//! Client certificates on the MQTT-over-TLS listener (and the secure WebSocket listener,
//! which runs the same TLS handshake): asked for at the handshake, judged at CONNECT.
//!
//! The listener asks every client for a certificate but does not require one, so key and
//! password logins over TLS keep working. A client that presents one must prove it holds the
//! certificate's private key: its handshake signature (TLS 1.2 `CertificateVerify`, TLS 1.3
//! `CertificateVerify`) is checked here with rustls' webpki helpers and the aws-lc-rs
//! provider's algorithms, and a bad signature fails the handshake.
//!
//! Whether the chain is *acceptable* is deliberately not decided here. Which CAs may sign
//! device certificates, which device a certificate logs in, and which certificates are
//! revoked or expired live in the store and change at run time (an organization adds a CA,
//! an operator revokes a certificate); rustls' verifier would need a fixed root store built
//! when the listener starts. So the handshake accepts any chain, the chain travels in
//! [`Login::client_certificates`](crate::Login::client_certificates) to the
//! [`Authenticator`](crate::Authenticator), and the authenticator's refusal becomes a CONNACK
//! return code like any other login's. The same `Login` is kept with the session, so
//! [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize) judges the chain again when
//! a certificate is revoked. No CA names are hinted to clients (`certificate_authorities` is
//! empty): a client with a certificate then always sends it, and the broker does not reveal
//! which organizations it serves.

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The listener's [`ClientCertVerifier`]: offers client authentication, never requires it,
/// accepts any chain, and verifies the handshake signature against the presented
/// certificate's key.
#[derive(Debug)]
pub(crate) struct CertificateRequest {
    /// The signature algorithms of the provider the listener runs on.
    algorithms: WebPkiSupportedAlgorithms,
}

impl CertificateRequest {
    /// Checks handshake signatures with `provider`'s algorithms (the listener's own).
    pub(crate) fn new(provider: &CryptoProvider) -> CertificateRequest {
        CertificateRequest {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for CertificateRequest {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Judged by the authenticator at CONNECT (module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

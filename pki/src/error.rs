//! The one error type of the crate.
//!
//! Messages are shown to API users (400 bodies), so they are whole sentences in the manner of
//! OpenWISP's validation errors; [`PkiError::field`] says which request field a message belongs
//! to, so the API can answer with a DRF field error (`{"field": ["message"]}`).

use std::path::PathBuf;

/// Everything that can go wrong while making, reading or checking certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The certificate is not a readable X.509 PEM/DER certificate.
    #[error("Invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The private key is not a readable RSA or EC private key.
    #[error("Invalid private key: {0}")]
    InvalidKey(String),
    /// The private key belongs to another certificate.
    #[error("The private key does not match the public key of the certificate.")]
    KeyMismatch,
    /// The private key is encrypted and the passphrase is missing or wrong.
    #[error("Incorrect passphrase.")]
    WrongPassphrase,
    /// The certificate was not issued by this CA (issuer name or signature differ).
    #[error("The certificate is not signed by this CA.")]
    NotSignedBy,
    /// The certificate (or its CA) has expired.
    #[error("The certificate has expired.")]
    Expired,
    /// The certificate (or its CA) is not valid yet.
    #[error("The certificate is not yet valid.")]
    NotYetValid,
    /// The issuing certificate is not a CA (BasicConstraints CA:FALSE or missing).
    #[error("The selected CA is not authorized to sign certificates (BasicConstraints).")]
    NotACa,
    /// A key type, key length, digest or combination this server cannot produce or read.
    #[error("{0}")]
    Unsupported(String),
    /// A request field has a value that cannot go into a certificate.
    #[error("{message}")]
    Invalid {
        /// The request field (OpenWISP's name for it), e.g. `serial_number`.
        field: &'static str,
        /// The sentence for the user.
        message: String,
    },
    /// A cryptographic primitive failed, or sealed data was tampered with or sealed by another
    /// server secret.
    #[error("Cryptographic operation failed: {0}")]
    Crypto(String),
    /// The server secret file has unsafe permissions or unusable content.
    #[error("The server secret file {} is unusable: {reason}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The server secret file could not be read or written.
    #[error("Cannot access the server secret file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl PkiError {
    /// The OpenWISP request field this error is about, if any, so the API can put the message
    /// under that field; `None` means a general (`detail`/`__all__`) error.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            PkiError::InvalidCertificate(_) => Some("certificate"),
            PkiError::InvalidKey(_) | PkiError::KeyMismatch => Some("private_key"),
            PkiError::WrongPassphrase => Some("passphrase"),
            PkiError::NotSignedBy | PkiError::NotACa => Some("ca"),
            PkiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> PkiError {
        PkiError::Invalid {
            field,
            message: message.into(),
        }
    }
}

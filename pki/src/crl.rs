//! Certificate revocation lists.
//!
//! django-x509's `Ca.crl`: issuer = the CA subject, lastUpdate = now, nextUpdate = now + 1 day,
//! one entry per revoked certificate of the CA that has not expired yet (its serial number,
//! revocation date, reason `unspecified`), signed with the CA key and SHA-256. Here the
//! reason is left out instead, as RFC 5280 5.3.1 asks for `unspecified`. This crate takes the
//! times and the CRL number from the caller (the number must increase with every
//! CRL, RFC 5280 5.2.3) and adds authorityKeyIdentifier, so OpenSSL and others can pick the CA.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
use time::OffsetDateTime;

use crate::issuance::{Authority, Signer};
use crate::key::{PrivateKey, crl_digest};
use crate::{PkiError, SerialNumber};

/// One revoked certificate in a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number.
    pub serial: SerialNumber,
    /// When it was revoked (`revoked_at`).
    pub revoked_at: OffsetDateTime,
}

/// A CRL (PEM) signed by `issuer`, listing `revoked`; crl_number increases each time.
pub fn crl(
    issuer: &Authority<'_>,
    revoked: &[Revoked],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, PkiError> {
    if next_update <= this_update {
        return Err(PkiError::invalid(
            "next_update",
            "The next update of a CRL must be after this update.",
        ));
    }
    let key = PrivateKey::from_pem(issuer.private_key_pem, None)?;
    let signer = Signer::load(issuer, crl_digest(key.spec))?;
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_be_bytes(&crl_number.to_be_bytes()).to_rcgen(),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: r.serial.to_rcgen(),
                revocation_time: r.revoked_at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(signer.key_identifier.clone()),
    };
    let list = params.signed_by(&signer.issuer).map_err(|e| match e {
        rcgen::Error::IssuerNotCrlSigner => PkiError::Unsupported(
            "This CA's key usage does not allow signing CRLs (cRLSign).".into(),
        ),
        other => PkiError::Crypto(format!("cannot sign the CRL: {other}")),
    })?;
    list.pem()
        .map_err(|e| PkiError::Crypto(format!("cannot encode the CRL: {e}")))
}

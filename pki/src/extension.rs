//! The extra extensions a user may ask for, in OpenWISP's JSON.
//!
//! django-x509's `extensions` field is a JSON list of `{"name": …, "critical": bool, "value": …}`
//! added on top of the defaults. The names it knows are:
//! - `extendedKeyUsage`: a comma-separated list of `clientAuth`, `serverAuth`, `codeSigning`,
//!   `emailProtection` (case-insensitive);
//! - `nsComment`: a free text (at most 255 bytes);
//! - `nsCertType`: a comma-separated list of `client`, `server`, `email`, `objsign`, `sslCA`,
//!   `emailCA`, `objCA`.
//!
//! Anything else is refused ("Unsupported extension: …"). (Newer django-x509 also accepts
//! `{"oid": …, "value": "ASN1:…"}` custom extensions; those are not supported here.)
//!
//! The defaults every certificate gets (not listed in `extensions`): CA — basicConstraints
//! `CA:TRUE, pathlen:0` (critical), keyUsage `keyCertSign, cRLSign` (critical); end-entity —
//! basicConstraints `CA:FALSE` (not critical), keyUsage `digitalSignature, keyEncipherment`
//! (not critical); both — subjectKeyIdentifier (SHA-1 of the public key) and
//! authorityKeyIdentifier (the issuer's subject key identifier).

use rcgen::CustomExtension;
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use crate::PkiError;

const EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const NS_CERT_TYPE: &[u64] = &[2, 16, 840, 1, 113730, 1, 1];
const NS_COMMENT: &[u64] = &[2, 16, 840, 1, 113730, 1, 13];

const EKU_NAMES: [(&str, &[u64]); 4] = [
    ("serverAuth", &[1, 3, 6, 1, 5, 5, 7, 3, 1]),
    ("clientAuth", &[1, 3, 6, 1, 5, 5, 7, 3, 2]),
    ("codeSigning", &[1, 3, 6, 1, 5, 5, 7, 3, 3]),
    ("emailProtection", &[1, 3, 6, 1, 5, 5, 7, 3, 4]),
];

const NS_CERT_TYPES: [(&str, u8); 7] = [
    ("client", 0x80),
    ("server", 0x40),
    ("email", 0x20),
    ("objsign", 0x10),
    ("sslCA", 0x04),
    ("emailCA", 0x02),
    ("objCA", 0x01),
];

/// One extra extension as OpenWISP's `extensions` JSON lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// `extendedKeyUsage`, `nsComment` or `nsCertType`.
    pub name: String,
    /// Whether a verifier that does not understand it must reject the certificate.
    #[serde(default)]
    pub critical: bool,
    /// The extension's value in OpenWISP's text form.
    pub value: String,
}

fn invalid(message: String) -> PkiError {
    PkiError::invalid("extensions", message)
}

impl Extension {
    /// The DER extension for rcgen, or why the value cannot be one.
    pub(crate) fn to_custom(&self) -> Result<CustomExtension, PkiError> {
        let (oid, content) = match self.name.as_str() {
            "extendedKeyUsage" => {
                let mut oids = Vec::new();
                for usage in self
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                {
                    let oid = EKU_NAMES
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(usage))
                        .map(|(_, oid)| *oid)
                        .ok_or_else(|| {
                            invalid(format!("Unsupported extendedKeyUsage value: {usage}"))
                        })?;
                    oids.push(oid);
                }
                if oids.is_empty() {
                    return Err(invalid(
                        "extendedKeyUsage extension requires a value.".into(),
                    ));
                }
                let der = yasna::construct_der(|w| {
                    w.write_sequence(|w| {
                        for oid in &oids {
                            w.next()
                                .write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                        }
                    })
                });
                (EXTENDED_KEY_USAGE, der)
            }
            "nsComment" => {
                if self.value.is_empty() {
                    return Err(invalid("nsComment extension requires a value.".into()));
                }
                if self.value.len() > 255 {
                    return Err(invalid(
                        "nsComment value exceeds maximum length of 255 bytes".into(),
                    ));
                }
                if !self.value.is_ascii() {
                    return Err(invalid("nsComment value must be plain ASCII.".into()));
                }
                let der = yasna::construct_der(|w| w.write_ia5_string(&self.value));
                (NS_COMMENT, der)
            }
            "nsCertType" => {
                let mut bits = 0u8;
                for kind in self
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                {
                    bits |= NS_CERT_TYPES
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(kind))
                        .map(|(_, bit)| *bit)
                        .ok_or_else(|| invalid(format!("Unsupported nsCertType value: {kind}")))?;
                }
                if bits == 0 {
                    return Err(invalid(
                        "nsCertType extension requires at least one valid type.".into(),
                    ));
                }
                let used = 8 - bits.trailing_zeros() as usize;
                let der = yasna::construct_der(|w| w.write_bitvec_bytes(&[bits], used));
                (NS_CERT_TYPE, der)
            }
            other => return Err(invalid(format!("Unsupported extension: {other}"))),
        };
        let mut extension = CustomExtension::from_oid_content(oid, content);
        extension.set_criticality(self.critical);
        Ok(extension)
    }

    /// The extensions of a certificate that OpenWISP's JSON can express, in its text form.
    pub(crate) fn from_certificate(cert: &X509Certificate<'_>) -> Vec<Extension> {
        let mut found = Vec::new();
        for ext in cert.extensions() {
            let value = match ext.parsed_extension() {
                ParsedExtension::ExtendedKeyUsage(eku) if eku.other.is_empty() && !eku.any => {
                    let flags = [
                        eku.server_auth,
                        eku.client_auth,
                        eku.code_signing,
                        eku.email_protection,
                    ];
                    let names: Vec<&str> = EKU_NAMES
                        .iter()
                        .zip(flags)
                        .filter(|(_, set)| *set)
                        .map(|((name, _), _)| *name)
                        .collect();
                    (!names.is_empty()).then(|| ("extendedKeyUsage", names.join(",")))
                }
                ParsedExtension::NSCertType(kinds) => {
                    let flags = [
                        kinds.ssl_client(),
                        kinds.ssl_server(),
                        kinds.smime(),
                        kinds.object_signing(),
                        kinds.ssl_ca(),
                        kinds.smime_ca(),
                        kinds.object_signing_ca(),
                    ];
                    let names: Vec<&str> = NS_CERT_TYPES
                        .iter()
                        .zip(flags)
                        .filter(|(_, set)| *set)
                        .map(|((name, _), _)| *name)
                        .collect();
                    (!names.is_empty()).then(|| ("nsCertType", names.join(",")))
                }
                ParsedExtension::NsCertComment(comment) => {
                    Some(("nsComment", (*comment).to_owned()))
                }
                _ => None,
            };
            if let Some((name, value)) = value {
                found.push(Extension {
                    name: name.to_owned(),
                    critical: ext.critical,
                    value,
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openwisp_extension_json_reads_and_writes_back() {
        let json = r#"[{"name": "nsCertType", "value": "client", "critical": false},
                       {"name": "extendedKeyUsage", "value": "clientAuth"}]"#;
        let extensions: Vec<Extension> = serde_json::from_str(json).unwrap();
        assert!(!extensions[1].critical);
        assert_eq!(
            serde_json::to_value(&extensions[0]).unwrap(),
            serde_json::json!({"name": "nsCertType", "critical": false, "value": "client"})
        );
    }

    #[test]
    fn unknown_extensions_and_values_are_refused_as_field_errors() {
        for (name, value) in [
            ("subjectAltName", "DNS:x"),
            ("extendedKeyUsage", "ocspSigning"),
            ("nsCertType", "nobody"),
            ("nsComment", ""),
        ] {
            let ext = Extension {
                name: name.into(),
                critical: false,
                value: value.into(),
            };
            let err = ext.to_custom().unwrap_err();
            assert_eq!(err.field(), Some("extensions"), "{name}: {err}");
        }
    }
}

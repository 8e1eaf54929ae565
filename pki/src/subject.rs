//! The subject (and issuer) distinguished name, in OpenWISP's fields.
//!
//! django-x509 puts the non-empty fields into the name in this order: C (`country_code`), ST
//! (`state`), L (`city`), O (`organization_name`), OU (`organizational_unit_name`),
//! emailAddress (`email`), CN (`common_name`). On import it reads each back (the first value of
//! each), drops a country code longer than 2 characters (legacy systems), and takes `email` from
//! the first rfc822Name of subjectAltName when there is one, else from the subject.

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{DistinguishedName, DnType, DnValue};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::PkiError;

const EMAIL_ADDRESS: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

/// A certificate's subject in OpenWISP's fields; an empty string means the attribute is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// C, two letters.
    pub country_code: String,
    /// ST.
    pub state: String,
    /// L.
    pub city: String,
    /// O.
    pub organization_name: String,
    /// OU.
    pub organizational_unit_name: String,
    /// emailAddress.
    pub email: String,
    /// CN.
    pub common_name: String,
}

impl Subject {
    /// The rcgen name, with OpenSSL's usual string types (PrintableString for C, IA5String for
    /// emailAddress, UTF8String elsewhere).
    pub(crate) fn to_distinguished_name(&self) -> Result<DistinguishedName, PkiError> {
        let mut name = DistinguishedName::new();
        if !self.country_code.is_empty() {
            let code = PrintableString::try_from(self.country_code.as_str())
                .ok()
                .filter(|_| self.country_code.chars().count() == 2)
                .ok_or_else(|| {
                    PkiError::invalid("country_code", "The country code must be 2 letters.")
                })?;
            name.push(DnType::CountryName, DnValue::PrintableString(code));
        }
        let text = [
            (DnType::StateOrProvinceName, &self.state),
            (DnType::LocalityName, &self.city),
            (DnType::OrganizationName, &self.organization_name),
            (
                DnType::OrganizationalUnitName,
                &self.organizational_unit_name,
            ),
        ];
        for (kind, value) in text {
            if !value.is_empty() {
                name.push(kind, DnValue::Utf8String(value.clone()));
            }
        }
        if !self.email.is_empty() {
            let email = Ia5String::try_from(self.email.as_str()).map_err(|_| {
                PkiError::invalid("email", "The email address must be plain ASCII.")
            })?;
            name.push(
                DnType::CustomDnType(EMAIL_ADDRESS.to_vec()),
                DnValue::Ia5String(email),
            );
        }
        if !self.common_name.is_empty() {
            name.push(
                DnType::CommonName,
                DnValue::Utf8String(self.common_name.clone()),
            );
        }
        Ok(name)
    }

    /// What django-x509's import reads from a certificate.
    pub(crate) fn from_certificate(cert: &X509Certificate<'_>) -> Subject {
        let name = cert.subject();
        let mut country_code = first(name.iter_country());
        if country_code.chars().count() > 2 {
            country_code.clear();
        }
        let san_email = cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    san.general_names.iter().find_map(|general| match general {
                        GeneralName::RFC822Name(email) => Some((*email).to_owned()),
                        _ => None,
                    })
                }
                _ => None,
            });
        Subject {
            country_code,
            state: first(name.iter_state_or_province()),
            city: first(name.iter_locality()),
            organization_name: first(name.iter_organization()),
            organizational_unit_name: first(name.iter_organizational_unit()),
            email: san_email.unwrap_or_else(|| first(name.iter_email())),
            common_name: first(name.iter_common_name()),
        }
    }
}

fn first<'a, 'b: 'a>(mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'b>>) -> String {
    values
        .next()
        .and_then(|value| value.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// OpenWISP's loose name comparison (each attribute's type and trimmed, lower-cased value, as a
/// set), used when the raw DER of two names differs only in string types.
pub(crate) fn same_name(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    if a.as_raw() == b.as_raw() {
        return true;
    }
    let identity = |name: &X509Name<'_>| {
        let mut set: Vec<(String, String)> = name
            .iter_attributes()
            .map(|attr| {
                let value = attr.as_str().unwrap_or_default().trim().to_lowercase();
                (attr.attr_type().to_id_string(), value)
            })
            .collect();
        set.sort();
        set.dedup();
        set
    };
    identity(a) == identity(b)
}

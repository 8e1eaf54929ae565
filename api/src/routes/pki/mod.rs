//! Certificate authorities (`/api/v1/controller/ca/`) and certificates
//! (`/api/v1/controller/cert/`), as openwisp-controller's PKI API serves them: integer ids;
//! create generates a key and signs, or imports a certificate and key when both are given; the
//! detail routes change only name, organization and notes (the rest is the certificate's);
//! `passphrase` is write-only. A device can be given a certificate that logs it in over MQTT
//! (`POST /api/v1/controller/device/{id}/certificate/`).

pub mod cas;
pub mod certs;

use fleetmq_store::{Material, Timestamp, X509Fields};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::KnownFormat;
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::{Bounded, Email, NonBlank, NullablePk, text_field};
use crate::{ApiError, AppState};

/// The routes of both resources.
pub fn router() -> utoipa_axum::router::OpenApiRouter<crate::AppState> {
    cas::router().merge(certs::router())
}

/// Key lengths django-x509 offers: EC curve sizes and RSA modulus sizes.
pub const KEY_LENGTHS: [&str; 6] = ["256", "384", "521", "1024", "2048", "4096"];
/// Digests django-x509 offers.
pub const DIGESTS: [&str; 5] = ["sha1", "sha224", "sha256", "sha384", "sha512"];

fn choice(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<String, String> {
    move |s: &str| {
        if allowed.contains(&s) {
            Ok(s.to_owned())
        } else {
            Err(format!("\"{s}\" is not a valid choice."))
        }
    }
}

text_field!(
    /// `256`, `384`, `521` (ECDSA) or `1024`, `2048`, `4096` (RSA).
    KeyLength(String),
    choice(&KEY_LENGTHS),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(KEY_LENGTHS)),
);

text_field!(
    /// The signature's digest.
    DigestField(String),
    choice(&DIGESTS),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(DIGESTS)),
);

text_field!(
    /// An instant: RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` taken as UTC.
    Instant(Timestamp),
    |s: &str| Timestamp::parse_lenient(s).ok_or_else(|| {
        "Datetime has wrong format. Use one of these formats instead: \
         YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
            .to_owned()
    }),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
);

text_field!(
    /// A serial number in decimal (blank: chosen at random).
    SerialField(String),
    |s: &str| {
        if s.is_empty() || (s.len() <= 48 && s.bytes().all(|b| b.is_ascii_digit())) {
            Ok(s.to_owned())
        } else {
            Err("Serial number must be a decimal number of at most 48 digits.".to_owned())
        }
    },
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]{0,48}$")),
);

/// What a client sends to create a CA or a certificate (OpenWISP's list serializers). Give
/// `certificate` and `private_key` to import; otherwise a key is generated and signed.
#[derive(Debug, Deserialize, ToSchema)]
pub struct X509Write {
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Owning organization; `null` (superusers only) = shared.
    #[schema(required = true, nullable = false)]
    organization: Option<NullablePk>,
    /// Free text.
    #[schema(nullable = false)]
    notes: Option<Bounded<10000>>,
    /// Default `2048`.
    #[schema(nullable = false)]
    key_length: Option<KeyLength>,
    /// Default `sha256`.
    #[schema(nullable = false)]
    digest: Option<DigestField>,
    /// Default: yesterday at midnight UTC.
    validity_start: Option<Option<Instant>>,
    /// Default: in 10 years (a CA) or 1 year (a certificate).
    validity_end: Option<Option<Instant>>,
    /// Subject C (two letters).
    #[schema(nullable = false)]
    country_code: Option<Bounded<2>>,
    /// Subject ST.
    #[schema(nullable = false)]
    state: Option<Bounded<64>>,
    /// Subject L.
    #[schema(nullable = false)]
    city: Option<Bounded<64>>,
    /// Subject O.
    #[schema(nullable = false)]
    organization_name: Option<Bounded<64>>,
    /// Subject OU.
    #[schema(nullable = false)]
    organizational_unit_name: Option<Bounded<64>>,
    /// Subject emailAddress.
    #[schema(nullable = false)]
    email: Option<Email>,
    /// Subject CN.
    #[schema(nullable = false)]
    common_name: Option<Bounded<64>>,
    /// Additional extensions: `[{"name": "nsCertType", "critical": false, "value": "client"}]`.
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    extensions: Option<Vec<Value>>,
    /// Serial number in decimal; blank = random.
    #[schema(nullable = false)]
    serial_number: Option<SerialField>,
    /// PEM certificate to import (with `private_key`).
    #[schema(nullable = false)]
    certificate: Option<String>,
    /// PEM private key to import (with `certificate`).
    #[schema(nullable = false)]
    private_key: Option<String>,
    /// Encrypts the private key shown (and decrypts an imported one). Write-only.
    #[schema(nullable = false)]
    passphrase: Option<Bounded<64>>,
    /// The signing CA (certificates only).
    #[schema(value_type = Option<u64>)]
    pub(crate) ca: Option<Value>,
}

/// What a client sends to change a CA or certificate after creation: OpenWISP's detail
/// serializers make everything else read-only (and ignore it).
#[derive(Debug, Deserialize, ToSchema)]
pub struct X509Change {
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Owning organization; `null` (superusers only) = shared.
    #[schema(nullable = false)]
    organization: Option<NullablePk>,
    /// Free text.
    #[schema(nullable = false)]
    notes: Option<Bounded<10000>>,
}

impl X509Change {
    /// The relabelling this change asks for, over the current values.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: &X509Fields,
    ) -> Result<fleetmq_store::Relabel, ApiError> {
        let organization = caller
            .owner(state, self.organization, current.organization)
            .await?;
        Ok(fleetmq_store::Relabel {
            name: self.name.map_or_else(|| current.name.clone(), |n| n.0),
            organization,
            notes: self.notes.map_or_else(|| current.notes.clone(), |n| n.0),
        })
    }
}

impl X509Write {
    /// The draft of a new CA (`ca_validity: true`) or certificate.
    async fn draft(
        self,
        state: &AppState,
        caller: &Caller,
        ca_validity: bool,
    ) -> Result<fleetmq_store::Draft, ApiError> {
        let now = Timestamp::now();
        let organization = caller.owner(state, self.organization, None).await?;
        let default_end = if ca_validity {
            fleetmq_store::pki::default_ca_validity_end(now)
        } else {
            fleetmq_store::pki::default_cert_validity_end(now)
        };
        // sha256 as django-x509, but EC keys sign with their curve's own digest.
        let digest = self.digest.map_or_else(
            || {
                match self.key_length.as_ref().map(|k| k.0.as_str()) {
                    Some("384") => "sha384",
                    Some("521") => "sha512",
                    _ => "sha256",
                }
                .to_owned()
            },
            |d| d.0,
        );
        let fields = X509Fields {
            name: self.name.map(|n| n.0).unwrap_or_default(),
            organization,
            notes: self.notes.map(|n| n.0).unwrap_or_default(),
            key_length: self.key_length.map_or_else(|| "2048".to_owned(), |k| k.0),
            digest,
            validity_start: self
                .validity_start
                .flatten()
                .map_or_else(|| fleetmq_store::pki::default_validity_start(now), |i| i.0),
            validity_end: self.validity_end.flatten().map_or(default_end, |i| i.0),
            country_code: self.country_code.map(|v| v.0).unwrap_or_default(),
            state: self.state.map(|v| v.0).unwrap_or_default(),
            city: self.city.map(|v| v.0).unwrap_or_default(),
            organization_name: self.organization_name.map(|v| v.0).unwrap_or_default(),
            organizational_unit_name: self
                .organizational_unit_name
                .map(|v| v.0)
                .unwrap_or_default(),
            email: self.email.map(|v| v.0).unwrap_or_default(),
            common_name: self.common_name.map(|v| v.0).unwrap_or_default(),
            extensions: self.extensions.unwrap_or_default(),
        };
        if fields.validity_end <= fields.validity_start {
            return Err(ApiError::field(
                "validity_end",
                "The end of the validity must come after its start.",
            ));
        }
        let passphrase = self.passphrase.map(|p| p.0).unwrap_or_default();
        let certificate = self.certificate.filter(|c| !c.trim().is_empty());
        let private_key = self.private_key.filter(|k| !k.trim().is_empty());
        let origin = match (certificate, private_key) {
            (Some(certificate), Some(private_key)) => fleetmq_store::Origin::Import {
                certificate,
                private_key,
                passphrase,
            },
            (Some(_), None) => {
                return Err(ApiError::field(
                    "private_key",
                    "Importing a certificate needs its private key too.",
                ));
            }
            (None, Some(_)) => {
                return Err(ApiError::field(
                    "certificate",
                    "Importing a private key needs its certificate too.",
                ));
            }
            (None, None) => fleetmq_store::Origin::Generate {
                passphrase,
                serial: self.serial_number.map(|s| s.0).filter(|s| !s.is_empty()),
            },
        };
        Ok(fleetmq_store::Draft { fields, origin })
    }
}

/// The fields CAs and certificates show alike.
#[derive(Debug, Serialize, ToSchema)]
pub struct X509View {
    /// Display name.
    pub name: String,
    /// Owning organization; `null` = shared.
    pub organization: Option<Uuid>,
    /// Free text.
    pub notes: String,
    /// Key length (RSA bits or EC curve size).
    pub key_length: String,
    /// Signature digest.
    pub digest: String,
    /// Not valid before.
    pub validity_start: String,
    /// Not valid after.
    pub validity_end: String,
    /// Subject C.
    pub country_code: String,
    /// Subject ST.
    pub state: String,
    /// Subject L.
    pub city: String,
    /// Subject O.
    pub organization_name: String,
    /// Subject OU.
    pub organizational_unit_name: String,
    /// Subject emailAddress.
    pub email: String,
    /// Subject CN.
    pub common_name: String,
    /// Extensions beyond the defaults.
    #[schema(value_type = Vec<Object>)]
    pub extensions: Vec<Value>,
    /// Serial number (decimal).
    pub serial_number: String,
    /// PEM certificate.
    pub certificate: String,
    /// PEM private key (encrypted when a passphrase was given).
    pub private_key: String,
}

fn x509_view(fields: X509Fields, material: Material) -> X509View {
    X509View {
        name: fields.name,
        organization: fields.organization.map(|o| o.0),
        notes: fields.notes,
        key_length: fields.key_length,
        digest: fields.digest,
        validity_start: fields.validity_start.to_string(),
        validity_end: fields.validity_end.to_string(),
        country_code: fields.country_code,
        state: fields.state,
        city: fields.city,
        organization_name: fields.organization_name,
        organizational_unit_name: fields.organizational_unit_name,
        email: fields.email,
        common_name: fields.common_name,
        extensions: fields.extensions,
        serial_number: material.serial_number,
        certificate: material.certificate,
        private_key: material.private_key,
    }
}

/// Parses an integer path id; anything else is not found (as Django's int lookups).
pub(crate) fn int_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| ApiError::NotFound)
}

//! Certificates, CRLs and encrypted keys made by fleetmq-pki, checked by the real `openssl`
//! binary (what an OpenVPN server or a device would use), and import/verification behaviour.

use std::path::Path;
use std::process::{Command, Output};

use fleetmq_pki::{
    Authority, Curve, Digest, Extension, Issued, KeySpec, PkiError, Request, Revoked, SerialNumber,
    Subject, Validity,
};
use time::{Duration, OffsetDateTime};

fn subject(common_name: &str) -> Subject {
    Subject {
        country_code: "IT".into(),
        state: "RM".into(),
        city: "Rome".into(),
        organization_name: "ACME".into(),
        organizational_unit_name: "IoT".into(),
        email: "ops@example.com".into(),
        common_name: common_name.into(),
    }
}

fn request(key: KeySpec, digest: Digest, common_name: &str, validity: Validity) -> Request {
    Request {
        key,
        digest,
        validity,
        subject: subject(common_name),
        serial: SerialNumber::random(),
        extensions: Vec::new(),
    }
}

fn client_extensions() -> Vec<Extension> {
    vec![
        Extension {
            name: "nsCertType".into(),
            critical: false,
            value: "client".into(),
        },
        Extension {
            name: "extendedKeyUsage".into(),
            critical: false,
            value: "clientAuth".into(),
        },
        Extension {
            name: "nsComment".into(),
            critical: false,
            value: "fleetmq device".into(),
        },
    ]
}

fn new_ca(key: KeySpec, digest: Digest) -> (Request, Issued) {
    let req = request(
        key,
        digest,
        "Fleet CA",
        Validity::default_for_ca(OffsetDateTime::now_utc()),
    );
    let issued = fleetmq_pki::create_authority(&req).expect("CA is created");
    (req, issued)
}

fn leaf(ca: &Issued, key: KeySpec, digest: Digest, validity: Validity) -> (Request, Issued) {
    let mut req = request(key, digest, "device-1", validity);
    req.extensions = client_extensions();
    let issued = fleetmq_pki::issue(&req, &authority(ca)).expect("certificate is issued");
    (req, issued)
}

fn authority(ca: &Issued) -> Authority<'_> {
    Authority {
        certificate_pem: &ca.certificate_pem,
        private_key_pem: &ca.private_key_pem,
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn serial_hex(serial: &SerialNumber) -> String {
    serial
        .to_be_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("PEM").into_contents()
}

fn check_pair(key: KeySpec, digest: Digest, key_text: &str, signature: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca_req, ca) = new_ca(key, digest);
    let (leaf_req, leaf) = leaf(
        &ca,
        key,
        digest,
        Validity::default_for_certificate(OffsetDateTime::now_utc()),
    );
    std::fs::write(dir.path().join("ca.pem"), &ca.certificate_pem).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &leaf.certificate_pem).unwrap();

    let verify = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "cert.pem"]);
    assert!(verify.status.success(), "openssl verify: {}", text(&verify));

    let ca_text = text(&openssl(
        dir.path(),
        &["x509", "-noout", "-text", "-in", "ca.pem"],
    ));
    for expected in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "C=IT, ST=RM, L=Rome, O=ACME, OU=IoT, emailAddress=ops@example.com, CN=Fleet CA",
        key_text,
        signature,
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(
            ca_text.replace(" = ", "=").contains(expected),
            "CA text lacks {expected:?}:\n{ca_text}"
        );
    }
    assert!(
        ca_text.contains("X509v3 Basic Constraints: critical"),
        "{ca_text}"
    );
    assert!(ca_text.contains("X509v3 Key Usage: critical"), "{ca_text}");

    let leaf_text = text(&openssl(
        dir.path(),
        &["x509", "-noout", "-text", "-in", "cert.pem"],
    ));
    for expected in [
        "CA:FALSE",
        "Digital Signature, Key Encipherment",
        "TLS Web Client Authentication",
        "SSL Client",
        "fleetmq device",
        "CN=device-1",
        key_text,
        signature,
    ] {
        assert!(
            leaf_text.replace(" = ", "=").contains(expected),
            "certificate text lacks {expected:?}:\n{leaf_text}"
        );
    }
    let serial = text(&openssl(
        dir.path(),
        &["x509", "-noout", "-serial", "-in", "cert.pem"],
    ));
    assert_eq!(
        serial.trim(),
        format!("serial={}", serial_hex(&leaf_req.serial))
    );

    // What the API reads back equals what it asked for.
    let parsed = fleetmq_pki::parse_certificate(&leaf.certificate_pem).unwrap();
    assert_eq!(parsed.subject, leaf_req.subject);
    assert_eq!(parsed.serial, leaf_req.serial);
    assert_eq!(parsed.key, key);
    assert_eq!(parsed.digest, digest);
    assert_eq!(parsed.extensions, leaf_req.extensions);
    assert_eq!(
        parsed.validity.end.unix_timestamp(),
        leaf_req.validity.end.unix_timestamp()
    );
    assert!(!parsed.is_ca);
    let parsed_ca = fleetmq_pki::parse_certificate(&ca.certificate_pem).unwrap();
    assert!(parsed_ca.is_ca);
    assert_eq!(parsed_ca.serial, ca_req.serial);

    fleetmq_pki::verify_signed_by(&leaf.certificate_pem, &ca.certificate_pem).unwrap();
    assert_eq!(
        fleetmq_pki::issuer_key(&der(&leaf.certificate_pem)).unwrap(),
        fleetmq_pki::subject_key(&ca.certificate_pem).unwrap()
    );
    // The private key is PKCS#8 that OpenSSL reads.
    assert!(
        leaf.private_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[test]
fn rsa_2048_sha256_pair_passes_openssl_verify() {
    check_pair(
        KeySpec::Rsa { bits: 2048 },
        Digest::Sha256,
        "Public-Key: (2048 bit)",
        "sha256WithRSAEncryption",
    );
}

#[test]
fn ec_p256_pair_passes_openssl_verify() {
    check_pair(
        KeySpec::Ec { curve: Curve::P256 },
        Digest::Sha256,
        "NIST CURVE: P-256",
        "ecdsa-with-SHA256",
    );
}

#[test]
fn ec_p384_pair_passes_openssl_verify() {
    check_pair(
        KeySpec::Ec { curve: Curve::P384 },
        Digest::Sha384,
        "NIST CURVE: P-384",
        "ecdsa-with-SHA384",
    );
}

#[test]
fn ec_p521_pair_passes_openssl_verify() {
    check_pair(
        KeySpec::Ec { curve: Curve::P521 },
        Digest::Sha512,
        "NIST CURVE: P-521",
        "ecdsa-with-SHA512",
    );
}

#[test]
fn rsa_1024_and_sha1_are_refused_with_a_reason() {
    let validity = Validity::default_for_ca(OffsetDateTime::now_utc());
    let err = fleetmq_pki::create_authority(&request(
        KeySpec::Rsa { bits: 1024 },
        Digest::Sha256,
        "old",
        validity,
    ))
    .unwrap_err();
    assert!(matches!(err, PkiError::Unsupported(_)), "{err}");
    let err = fleetmq_pki::create_authority(&request(
        KeySpec::Ec { curve: Curve::P256 },
        Digest::Sha1,
        "old",
        validity,
    ))
    .unwrap_err();
    assert!(matches!(err, PkiError::Unsupported(_)), "{err}");
}

#[test]
fn crl_lists_revoked_serials_and_openssl_refuses_the_revoked_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let p256 = KeySpec::Ec { curve: Curve::P256 };
    let (_, ca) = new_ca(p256, Digest::Sha256);
    let (revoked_req, revoked) = leaf(
        &ca,
        p256,
        Digest::Sha256,
        Validity::default_for_certificate(now),
    );
    let (_, kept) = leaf(
        &ca,
        p256,
        Digest::Sha256,
        Validity::default_for_certificate(now),
    );
    let list = fleetmq_pki::crl(
        &authority(&ca),
        &[Revoked {
            serial: revoked_req.serial.clone(),
            revoked_at: now - Duration::minutes(1),
        }],
        7,
        now - Duration::minutes(1),
        now + Duration::days(1),
    )
    .unwrap();
    for (name, content) in [
        ("ca.pem", &ca.certificate_pem),
        ("crl.pem", &list),
        ("revoked.pem", &revoked.certificate_pem),
        ("kept.pem", &kept.certificate_pem),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }

    let check = openssl(
        dir.path(),
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("verify OK"), "{}", text(&check));

    let listing = text(&openssl(
        dir.path(),
        &["crl", "-in", "crl.pem", "-noout", "-text"],
    ));
    assert!(
        listing.contains(&serial_hex(&revoked_req.serial)),
        "{listing}"
    );
    assert!(listing.contains("X509v3 CRL Number"), "{listing}");

    let args = [
        "verify",
        "-crl_check",
        "-CAfile",
        "ca.pem",
        "-CRLfile",
        "crl.pem",
    ];
    let refused = openssl(dir.path(), &[&args[..], &["revoked.pem"]].concat());
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("certificate revoked"),
        "{}",
        text(&refused)
    );
    let accepted = openssl(dir.path(), &[&args[..], &["kept.pem"]].concat());
    assert!(accepted.status.success(), "{}", text(&accepted));
}

#[test]
fn import_round_trips_a_generated_pair() {
    let (_, ca) = new_ca(KeySpec::Ec { curve: Curve::P256 }, Digest::Sha256);
    let (parsed, key) =
        fleetmq_pki::import(&ca.certificate_pem, &ca.private_key_pem, None).unwrap();
    assert_eq!(
        parsed,
        fleetmq_pki::parse_certificate(&ca.certificate_pem).unwrap()
    );
    assert!(parsed.is_ca);
    // The normalized key imports again and can sign.
    fleetmq_pki::import(&ca.certificate_pem, &key, None).unwrap();
    let issued = fleetmq_pki::issue(
        &request(
            KeySpec::Ec { curve: Curve::P256 },
            Digest::Sha256,
            "d",
            Validity::default_for_certificate(OffsetDateTime::now_utc()),
        ),
        &Authority {
            certificate_pem: &ca.certificate_pem,
            private_key_pem: &key,
        },
    )
    .unwrap();
    fleetmq_pki::verify_signed_by(&issued.certificate_pem, &ca.certificate_pem).unwrap();
}

#[test]
fn import_refuses_a_key_of_another_certificate_and_garbage() {
    let (_, one) = new_ca(KeySpec::Ec { curve: Curve::P256 }, Digest::Sha256);
    let (_, other) = new_ca(KeySpec::Ec { curve: Curve::P256 }, Digest::Sha256);
    let err = fleetmq_pki::import(&one.certificate_pem, &other.private_key_pem, None).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch), "{err}");

    let err = fleetmq_pki::import("not a certificate", &one.private_key_pem, None).unwrap_err();
    assert!(matches!(err, PkiError::InvalidCertificate(_)), "{err}");
    assert_eq!(err.field(), Some("certificate"));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = fleetmq_pki::import(garbage, &one.private_key_pem, None).unwrap_err();
    assert!(matches!(err, PkiError::InvalidCertificate(_)), "{err}");
    let err = fleetmq_pki::import(&one.certificate_pem, "garbage", None).unwrap_err();
    assert!(matches!(err, PkiError::InvalidKey(_)), "{err}");
}

#[test]
fn passphrase_protected_keys_import_only_with_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca) = new_ca(KeySpec::Rsa { bits: 2048 }, Digest::Sha256);
    let encrypted = fleetmq_pki::encrypt_private_key(&ca.private_key_pem, "s3cret").unwrap();
    assert!(encrypted.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    let (_, key) = fleetmq_pki::import(&ca.certificate_pem, &encrypted, Some("s3cret")).unwrap();
    assert_eq!(der(&key), der(&ca.private_key_pem));
    for wrong in [Some("wrong"), None] {
        let err = fleetmq_pki::import(&ca.certificate_pem, &encrypted, wrong).unwrap_err();
        assert!(matches!(err, PkiError::WrongPassphrase), "{err}");
        assert_eq!(err.field(), Some("passphrase"));
    }

    // OpenSSL opens what we encrypt.
    std::fs::write(dir.path().join("enc.pem"), &encrypted).unwrap();
    let opened = openssl(
        dir.path(),
        &["pkey", "-in", "enc.pem", "-passin", "pass:s3cret", "-noout"],
    );
    assert!(opened.status.success(), "{}", text(&opened));
}

#[test]
fn keys_encrypted_by_openssl_import_with_their_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    // django-x509's forms: RSA as traditional PEM with DEK-Info, EC as encrypted PKCS#8.
    let steps: [&[&str]; 4] = [
        &[
            "genrsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:pw",
            "-out",
            "rsa.pem",
            "2048",
        ],
        &[
            "req",
            "-x509",
            "-key",
            "rsa.pem",
            "-passin",
            "pass:pw",
            "-subj",
            "/CN=legacy",
            "-days",
            "2",
            "-out",
            "rsa.crt",
        ],
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-aes-256-cbc",
            "-pass",
            "pass:pw",
            "-out",
            "ec.pem",
        ],
        &[
            "req", "-x509", "-key", "ec.pem", "-passin", "pass:pw", "-subj", "/CN=ec", "-days",
            "2", "-out", "ec.crt",
        ],
    ];
    for step in steps {
        let out = openssl(dir.path(), step);
        assert!(out.status.success(), "openssl {step:?}: {}", text(&out));
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert!(read("rsa.pem").contains("DEK-Info: AES-256-CBC"));

    let (parsed, _) = fleetmq_pki::import(&read("rsa.crt"), &read("rsa.pem"), Some("pw")).unwrap();
    assert_eq!(parsed.key, KeySpec::Rsa { bits: 2048 });
    assert_eq!(parsed.subject.common_name, "legacy");
    let err = fleetmq_pki::import(&read("rsa.crt"), &read("rsa.pem"), Some("nope")).unwrap_err();
    assert!(matches!(err, PkiError::WrongPassphrase), "{err}");

    let (parsed, _) = fleetmq_pki::import(&read("ec.crt"), &read("ec.pem"), Some("pw")).unwrap();
    assert_eq!(parsed.key, KeySpec::Ec { curve: Curve::P384 });
    let err = fleetmq_pki::import(&read("ec.crt"), &read("ec.pem"), Some("nope")).unwrap_err();
    assert!(matches!(err, PkiError::WrongPassphrase), "{err}");
}

#[test]
fn verify_client_accepts_a_good_certificate_and_names_what_is_wrong_otherwise() {
    let now = OffsetDateTime::now_utc();
    let p256 = KeySpec::Ec { curve: Curve::P256 };
    let (_, ca) = new_ca(p256, Digest::Sha256);
    let (_, other_ca) = new_ca(p256, Digest::Sha256);
    let (req, good) = leaf(
        &ca,
        p256,
        Digest::Sha256,
        Validity::default_for_certificate(now),
    );

    let client =
        fleetmq_pki::verify_client(&der(&good.certificate_pem), &ca.certificate_pem, now).unwrap();
    assert_eq!(client.serial, req.serial);
    assert_eq!(client.common_name, "device-1");
    assert_eq!(
        client.not_after.unix_timestamp(),
        req.validity.end.unix_timestamp()
    );

    let err =
        fleetmq_pki::verify_client(&der(&good.certificate_pem), &other_ca.certificate_pem, now)
            .unwrap_err();
    assert!(matches!(err, PkiError::NotSignedBy), "{err}");

    let expired_validity = Validity {
        start: now - Duration::days(10),
        end: now - Duration::days(1),
    };
    let (_, expired) = leaf(&ca, p256, Digest::Sha256, expired_validity);
    let err = fleetmq_pki::verify_client(&der(&expired.certificate_pem), &ca.certificate_pem, now)
        .unwrap_err();
    assert!(matches!(err, PkiError::Expired), "{err}");

    let future = Validity {
        start: now + Duration::days(1),
        end: now + Duration::days(10),
    };
    let (_, early) = leaf(&ca, p256, Digest::Sha256, future);
    let err = fleetmq_pki::verify_client(&der(&early.certificate_pem), &ca.certificate_pem, now)
        .unwrap_err();
    assert!(matches!(err, PkiError::NotYetValid), "{err}");

    // A certificate that is not a CA cannot vouch for another.
    let err = fleetmq_pki::verify_client(&der(&good.certificate_pem), &good.certificate_pem, now)
        .unwrap_err();
    assert!(matches!(err, PkiError::NotACa), "{err}");
}

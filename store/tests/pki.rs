//! Private keys at rest: the data file alone reveals none, and another server secret cannot
//! open them; revocations survive a restart.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use fleetmq_store::{
    AccountStore, Draft, OrganizationFields, Origin, PKI_SECRET_FILE, PkiStore, Slug, StoreError,
    StoreOptions, X509Fields,
};

fn ca_draft(org: Option<fleetmq_store::OrgId>) -> Draft {
    let mut fields = X509Fields::issued("root".into(), org, "Root".into(), true, Vec::new());
    fields.key_length = "256".into();
    Draft {
        fields,
        origin: Origin::Generate {
            passphrase: String::new(),
            serial: None,
        },
    }
}

/// The base64 body lines of a PEM block (what a leak would contain).
fn pem_body(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 40)
        .map(str::to_owned)
        .collect()
}

fn the_stored_data_alone_reveals_no_private_key(engine: Engine) {
    let store = Fixture::new(engine);
    let (key, id) = {
        let db = store.open();
        let org = db
            .create_organization(OrganizationFields {
                name: "Acme".into(),
                slug: Slug::parse("acme").expect("slug"),
                description: String::new(),
                email: String::new(),
                url: String::new(),
                is_active: true,
            })
            .expect("organization");
        let ca = db.create_ca(ca_draft(Some(org.id))).expect("CA created");
        (ca.material.signing_key.clone(), ca.id)
    };
    let secret = store.dir.path().join(PKI_SECRET_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret)
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secret file is private");
    }
    let text = String::from_utf8_lossy(&store.raw_data()).into_owned();
    for line in pem_body(&key) {
        assert!(
            !text.contains(&line),
            "the stored data holds the key in clear"
        );
    }

    // Kept apart from its secret, the stored data does not open the key.
    std::fs::remove_file(&secret).expect("secret removed");
    let other = StoreOptions {
        pki_secret: Some(b"another secret of at least thirty-two bytes".to_vec()),
        ..StoreOptions::default()
    };
    let db = store.try_open(&other).expect("store opens");
    assert!(matches!(db.ca(id), Err(StoreError::Sealed { .. })));
}

fn a_revocation_survives_a_restart_and_is_in_the_next_crl(engine: Engine) {
    let store = Fixture::new(engine);
    let (ca, cert) = {
        let db = store.open();
        let ca = db.create_ca(ca_draft(None)).expect("CA created");
        let mut draft = ca_draft(None);
        draft.fields.name = "leaf".into();
        draft.fields.common_name = "leaf".into();
        let cert = db.create_cert(ca.id, draft).expect("certificate");
        db.revoke_cert(cert.id).expect("revoked");
        (ca.id, cert.id)
    };
    let db = store.open();
    let cert = db.cert(cert).expect("read").expect("kept");
    assert!(cert.revoked);
    let crl = db.ca_crl(ca).expect("read").expect("a CRL");
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
}

on_both_engines!(
    the_stored_data_alone_reveals_no_private_key,
    a_revocation_survives_a_restart_and_is_in_the_next_crl,
);

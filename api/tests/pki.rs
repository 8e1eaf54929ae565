//! Handler tests of `/api/v1/controller/ca/` and `/api/v1/controller/cert/`: what is generated,
//! imported, renewed and revoked, checked with Debian's `openssl` where the issue asks; who may
//! see and change what; and the certificate → device group lookup.

mod common;

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use common::TestApi;
use fleetmq_store::Group;
use serde_json::{Value, json};

const CAS: &str = "/api/v1/controller/ca/";
const CERTS: &str = "/api/v1/controller/cert/";

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, contents: &Value) {
    std::fs::write(dir.join(name), contents.as_str().expect("PEM text")).expect("file written");
}

async fn ca(api: &TestApi, token: &str, org: Option<&str>, body: Value) -> Value {
    let mut body = body;
    body["organization"] = org.map_or(Value::Null, |o| json!(o));
    let reply = api.post(CAS, token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn a_generated_chain_and_its_crl_pass_openssl() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let ca = ca(
        &api,
        &api.admin,
        Some(&acme),
        json!({"name": "acme root", "key_length": "2048", "digest": "sha256",
            "common_name": "Acme Root", "organization_name": "Acme", "country_code": "IT",
            "email": "pki@acme.example"}),
    )
    .await;
    assert!(ca["id"].is_u64(), "integer ids: {ca:?}");
    assert!(ca.get("passphrase").is_none());
    let cert = api
        .post(
            CERTS,
            &api.admin,
            json!({"name": "router", "ca": ca["id"], "organization": acme,
                "key_length": "256", "digest": "sha256", "common_name": "router-1",
                "extensions": [{"name": "nsCertType", "critical": false, "value": "client"}]}),
        )
        .await;
    assert_eq!(cert.status, StatusCode::CREATED, "{:?}", cert.body);
    assert_eq!(cert.body["revoked"], false);
    assert_eq!(cert.body["ca"], ca["id"]);

    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "ca.pem", &ca["certificate"]);
    write(dir.path(), "cert.pem", &cert.body["certificate"]);
    let (ok, out) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "cert.pem"]);
    assert!(ok, "openssl verify: {out}");
    let (_, text) = openssl(dir.path(), &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(
        text.contains("CN=Acme Root") || text.contains("CN = Acme Root"),
        "{text}"
    );
    assert!(text.contains("2048 bit"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    let (_, text) = openssl(dir.path(), &["x509", "-in", "cert.pem", "-noout", "-text"]);
    assert!(text.contains("router-1"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );

    // Revoked: the CRL (regenerated) names it and openssl refuses the certificate with it.
    let revoked = api
        .post(
            &format!("{CERTS}{}/revoke/", cert.body["id"]),
            &api.admin,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.body["revoked"], true);
    assert!(revoked.body["revoked_at"].is_string());
    let crl = api
        .get_raw(&format!("{CAS}{}/crl/", ca["id"]), Some(&api.admin))
        .await;
    assert_eq!(crl.status, StatusCode::OK);
    assert_eq!(crl.header("content-type"), "application/x-pem-file");
    // Also where openwisp-controller really serves it: no trailing slash.
    let bare = api
        .get_raw(&format!("{CAS}{}/crl", ca["id"]), Some(&api.admin))
        .await;
    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(bare.body, crl.body);
    std::fs::write(dir.path().join("ca.crl"), &crl.body).expect("CRL written");
    let (ok, out) = openssl(
        dir.path(),
        &["crl", "-in", "ca.crl", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(ok, "the CRL verifies against its CA: {out}");
    let (_, text) = openssl(dir.path(), &["crl", "-in", "ca.crl", "-noout", "-text"]);
    let serial: u128 = cert.body["serial_number"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a decimal serial");
    assert!(
        text.to_uppercase().contains(&format!("{serial:X}")),
        "the CRL lists serial {serial:X}: {text}"
    );
    let (ok, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "ca.crl",
            "cert.pem",
        ],
    );
    assert!(!ok, "a revoked certificate fails verification: {out}");
}

#[tokio::test]
async fn import_keeps_what_the_certificate_says_and_refuses_a_key_of_another() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let original = ca(
        &api,
        &api.admin,
        Some(&acme),
        json!({"name": "one", "common_name": "One", "key_length": "384"}),
    )
    .await;
    let other = ca(&api, &api.admin, Some(&acme), json!({"name": "two"})).await;

    let imported = ca(
        &api,
        &api.admin,
        Some(&acme),
        json!({"name": "imported", "certificate": original["certificate"],
            "private_key": original["private_key"]}),
    )
    .await;
    assert_eq!(imported["serial_number"], original["serial_number"]);
    assert_eq!(imported["common_name"], "One");
    assert_eq!(imported["key_length"], "384");
    assert_eq!(imported["validity_end"], original["validity_end"]);

    let mismatch = api
        .post(
            CAS,
            &api.admin,
            json!({"name": "bad", "organization": acme, "certificate": original["certificate"],
                "private_key": other["private_key"]}),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert!(
        mismatch.body["private_key"].is_array(),
        "{:?}",
        mismatch.body
    );
    let garbage = api
        .post(
            CAS,
            &api.admin,
            json!({"name": "bad", "organization": acme, "certificate": "not a certificate",
                "private_key": original["private_key"]}),
        )
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(garbage.body["certificate"].is_array(), "{:?}", garbage.body);

    // A certificate another CA signed is refused under this one.
    let signed = api
        .post(
            CERTS,
            &api.admin,
            json!({"name": "c", "ca": other["id"], "organization": acme}),
        )
        .await;
    assert_eq!(signed.status, StatusCode::CREATED);
    let wrong_ca = api
        .post(
            CERTS,
            &api.admin,
            json!({"name": "c2", "ca": original["id"], "organization": acme,
                "certificate": signed.body["certificate"], "private_key": signed.body["private_key"]}),
        )
        .await;
    assert_eq!(
        wrong_ca.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        wrong_ca.body
    );
    assert!(wrong_ca.body["ca"].is_array(), "{:?}", wrong_ca.body);
}

#[tokio::test]
async fn a_passphrase_encrypts_the_shown_key_and_is_never_shown() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let ca = ca(
        &api,
        &api.admin,
        Some(&acme),
        json!({"name": "locked", "passphrase": "open sesame"}),
    )
    .await;
    assert!(ca.get("passphrase").is_none());
    let key = ca["private_key"].as_str().unwrap_or_default();
    assert!(key.contains("ENCRYPTED"), "{key}");
    let detail = api.get(&format!("{CAS}{}/", ca["id"]), &api.admin).await;
    assert!(detail.body.get("passphrase").is_none());
    // The encrypted key opens with the passphrase only.
    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "key.pem", &ca["private_key"]);
    let (ok, out) = openssl(
        dir.path(),
        &[
            "pkey",
            "-in",
            "key.pem",
            "-passin",
            "pass:open sesame",
            "-noout",
        ],
    );
    assert!(ok, "{out}");
    let (ok, _) = openssl(
        dir.path(),
        &["pkey", "-in", "key.pem", "-passin", "pass:wrong", "-noout"],
    );
    assert!(!ok);
}

#[tokio::test]
async fn renewing_gives_a_new_serial_and_revokes_the_old_one() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let ca = ca(&api, &api.admin, Some(&acme), json!({"name": "root"})).await;
    let cert = api
        .post(
            CERTS,
            &api.admin,
            json!({"name": "c", "ca": ca["id"], "organization": acme}),
        )
        .await
        .body;
    let renewed = api
        .post(
            &format!("{CERTS}{}/renew/", cert["id"]),
            &api.admin,
            json!({}),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.body);
    assert_ne!(renewed.body["serial_number"], cert["serial_number"]);
    assert_ne!(renewed.body["certificate"], cert["certificate"]);
    assert_eq!(renewed.body["id"], cert["id"]);

    let ca_renewed = api
        .post(&format!("{CAS}{}/renew/", ca["id"]), &api.admin, json!({}))
        .await;
    assert_eq!(ca_renewed.status, StatusCode::OK);
    assert_ne!(ca_renewed.body["serial_number"], ca["serial_number"]);
    // Its certificate was renewed with it and chains to the new CA.
    let after = api
        .get(&format!("{CERTS}{}/", cert["id"]), &api.admin)
        .await;
    assert_ne!(after.body["serial_number"], renewed.body["serial_number"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "ca.pem", &ca_renewed.body["certificate"]);
    write(dir.path(), "cert.pem", &after.body["certificate"]);
    let (ok, out) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "cert.pem"]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn details_change_only_name_organization_and_notes() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let ca = ca(
        &api,
        &api.admin,
        Some(&acme),
        json!({"name": "root", "common_name": "Root"}),
    )
    .await;
    let changed = api
        .patch(
            &format!("{CAS}{}/", ca["id"]),
            &api.admin,
            json!({"name": "renamed", "notes": "kept", "common_name": "ignored", "key_length": "4096"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["name"], "renamed");
    assert_eq!(changed.body["notes"], "kept");
    assert_eq!(changed.body["common_name"], "Root");
    assert_eq!(changed.body["certificate"], ca["certificate"]);
    assert_eq!(
        api.get(&format!("{CAS}abc/"), &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{CAS}999/"), &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = api
        .post(
            CAS,
            &api.admin,
            json!({"name": "x", "organization": acme, "key_length": "3000", "digest": "md5"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body["key_length"],
        json!(["\"3000\" is not a valid choice."])
    );
    assert_eq!(
        bad.body["digest"],
        json!(["\"md5\" is not a valid choice."])
    );
}

#[tokio::test]
async fn tenants_see_their_own_and_shared_pki_and_change_only_their_own() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let ada = api.user("ada", &[Group::Administrator], &[&acme]).await;
    let otto = api.user("otto", &[Group::Operator], &[&acme]).await;
    let bob = api.user("bob", &[Group::Administrator], &[&beta]).await;

    let theirs = ca(&api, &bob, Some(&beta), json!({"name": "beta root"})).await;
    let shared = ca(&api, &api.admin, None, json!({"name": "shared root"})).await;
    let own = ca(&api, &ada, Some(&acme), json!({"name": "acme root"})).await;

    // Another organization's CA and certificates: 404 everywhere.
    let beta_cert = api
        .post(
            CERTS,
            &bob,
            json!({"name": "b", "ca": theirs["id"], "organization": beta}),
        )
        .await
        .body;
    for path in [
        format!("{CAS}{}/", theirs["id"]),
        format!("{CAS}{}/crl/", theirs["id"]),
        format!("{CERTS}{}/", beta_cert["id"]),
    ] {
        assert_eq!(
            api.get(&path, &ada).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        api.post(
            &format!("{CERTS}{}/revoke/", beta_cert["id"]),
            &ada,
            json!({})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete(&format!("{CAS}{}/", theirs["id"]), &ada)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let under_theirs = api
        .post(
            CERTS,
            &ada,
            json!({"name": "x", "ca": theirs["id"], "organization": acme}),
        )
        .await;
    assert_eq!(under_theirs.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        under_theirs.body["ca"],
        json!([format!(
            "Invalid pk \"{}\" - object does not exist.",
            theirs["id"]
        )])
    );
    let listed = api.get(CAS, &ada).await;
    let ids: Vec<&Value> = listed.body["results"]
        .as_array()
        .map(|r| r.iter().map(|c| &c["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![&own["id"], &shared["id"]]);

    // Shared: readable, not writable by a non-superuser.
    assert_eq!(
        api.get(&format!("{CAS}{}/", shared["id"]), &ada)
            .await
            .status,
        StatusCode::OK
    );
    for reply in [
        api.patch(
            &format!("{CAS}{}/", shared["id"]),
            &ada,
            json!({"name": "mine"}),
        )
        .await,
        api.post(&format!("{CAS}{}/renew/", shared["id"]), &ada, json!({}))
            .await,
        api.delete(&format!("{CAS}{}/", shared["id"]), &ada).await,
    ] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    }
    let null_org = api
        .post(CAS, &ada, json!({"name": "s", "organization": null}))
        .await;
    assert_eq!(
        null_org.body,
        json!({"organization": ["This field may not be null."]})
    );
    // A certificate under an organization's CA belongs to that organization.
    let mismatch = api
        .post(
            CERTS,
            &api.admin,
            json!({"name": "m", "ca": own["id"], "organization": beta}),
        )
        .await;
    assert_eq!(
        mismatch.body,
        json!({"organization": ["Please ensure that the organization of this certificate and the organization of the related CA match."]})
    );
    // Operators only look.
    assert_eq!(api.get(CAS, &otto).await.status, StatusCode::OK);
    assert_eq!(
        api.post(CAS, &otto, json!({"name": "o", "organization": acme}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_group_of_a_certificate_is_its_devices_group() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let group = api
        .post(
            "/api/v1/controller/group/",
            &api.admin,
            json!({"name": "g", "organization": acme, "templates": []}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{:?}", group.body);
    let device = api.device(&acme, "router-1").await;
    let placed = api
        .patch(
            &format!("/api/v1/controller/device/{device}/"),
            &api.admin,
            json!({"group": group.body["id"]}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.body);
    let issued = api
        .post(
            &format!("/api/v1/controller/device/{device}/certificate/"),
            &api.admin,
            json!({}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{:?}", issued.body);
    assert_eq!(issued.body["common_name"], device.as_str());
    assert_eq!(issued.body["organization"], acme.as_str());

    let found = api
        .get(
            &format!("/api/v1/controller/cert/{device}/group/"),
            &operator,
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(found.body["id"], group.body["id"]);
    let narrowed = api
        .get(
            &format!("/api/v1/controller/cert/{device}/group/?org=acme,other"),
            &operator,
        )
        .await;
    assert_eq!(narrowed.status, StatusCode::OK);
    let elsewhere = api
        .get(
            &format!("/api/v1/controller/cert/{device}/group/?org=beta"),
            &operator,
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    let unknown = api
        .get("/api/v1/controller/cert/nope/group/", &operator)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // Another tenant cannot issue certificates to this device, nor see its group.
    let bob = api.user("bob", &[Group::Administrator], &[&beta]).await;
    let refused = api
        .post(
            &format!("/api/v1/controller/device/{device}/certificate/"),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get(&format!("/api/v1/controller/cert/{device}/group/"), &bob)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

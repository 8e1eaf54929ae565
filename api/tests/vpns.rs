//! Handler tests of `/api/v1/controller/vpn/` and VPN-client templates: what a server needs and
//! gets, what its configuration download holds, what a device's configuration gets from a
//! VPN-client template (a certificate per device, or a key pair and an address never given
//! twice and freed when the template goes), and who sees what.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use axum::http::StatusCode;
use common::{TestApi, unpack};
use fleetmq_store::Group;
use serde_json::{Value, json};

const VPNS: &str = "/api/v1/controller/vpn/";
const TEMPLATES: &str = "/api/v1/controller/template/";

async fn download(api: &TestApi, path: &str) -> BTreeMap<String, String> {
    let reply = api.get_raw(path, Some(&api.admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    unpack(&reply.body)
}

fn wireguard_server() -> Value {
    json!({"wireguard": [{"name": "wg0", "port": 51820, "private_key": "{{ private_key }}",
        "address": "{{ ip_address }}/{{ subnet_prefixlen }}"}]})
}

fn openvpn_server() -> Value {
    json!({"openvpn": [{"name": "office", "mode": "server", "proto": "udp", "port": 1194,
        "dev": "tun0", "dev_type": "tun", "ca": "ca.pem", "cert": "cert.pem", "key": "key.pem",
        "dh": "dh.pem", "server": "10.9.0.0 255.255.255.0", "tls_server": true}]})
}

/// A device of `org` whose configuration carries `templates`.
async fn device_with(api: &TestApi, org: &str, name: &str, templates: &[&Value]) -> String {
    let device = api.device(org, name).await;
    let reply = api
        .patch(
            &format!("/api/v1/controller/device/{device}/"),
            &api.admin,
            json!({"config": {"backend": "netjsonconfig.OpenWrt", "templates": templates}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    device
}

async fn set_templates(api: &TestApi, device: &str, templates: &[&Value]) {
    let reply = api
        .patch(
            &format!("/api/v1/controller/device/{device}/"),
            &api.admin,
            json!({"config": {"templates": templates}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn wireguard_clients_get_keys_and_addresses_never_twice_and_freed_with_the_template() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let vpn = api
        .post(
            VPNS,
            &api.admin,
            json!({"name": "wg", "host": "vpn.example.com", "organization": acme,
                "backend": "openwisp_controller.vpn_backends.Wireguard",
                "subnet": "10.8.0.0/29", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(vpn.status, StatusCode::CREATED, "{:?}", vpn.body);
    assert_eq!(
        vpn.body["ip"], "10.8.0.1",
        "the server takes the lowest address"
    );
    let server_key = vpn.str("public_key");
    assert_eq!(server_key.len(), 44, "a base64 x25519 key");
    assert!(vpn.body.get("private_key").is_none());

    let template = api
        .post(
            TEMPLATES,
            &api.admin,
            json!({"name": "wg client", "organization": acme, "type": "vpn",
                "backend": "netjsonconfig.OpenWrt", "vpn": vpn.body["id"], "config": {}}),
        )
        .await;
    assert_eq!(template.status, StatusCode::CREATED, "{:?}", template.body);
    assert!(
        template.body["config"]["wireguard_peers"].is_array(),
        "{:?}",
        template.body
    );
    let t = template.body["id"].clone();

    let first = device_with(&api, &acme, "r1", &[&t]).await;
    let second = device_with(&api, &acme, "r2", &[&t]).await;
    let files = download(
        &api,
        &format!("/api/v1/controller/device/{first}/configuration/"),
    )
    .await;
    let network = &files["etc/config/network"];
    assert!(network.contains("10.8.0.2"), "{network}");
    assert!(
        network.contains(&server_key),
        "the server is the client's peer: {network}"
    );
    let other = download(
        &api,
        &format!("/api/v1/controller/device/{second}/configuration/"),
    )
    .await;
    assert!(other["etc/config/network"].contains("10.8.0.3"));

    // The server's archive has one peer per client and wg-quick accepts it.
    let server = download(
        &api,
        &format!(
            "{VPNS}{}/configuration/",
            vpn.body["id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    let conf = &server["wg0.conf"];
    assert_eq!(conf.matches("[Peer]").count(), 2, "{conf}");
    assert!(conf.contains("AllowedIPs = 10.8.0.2/32"), "{conf}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("wg0.conf");
    std::fs::write(&path, conf).expect("written");
    let out = Command::new("wg-quick")
        .arg("strip")
        .arg(&path)
        .output()
        .expect("wg-quick runs (apt-get install wireguard-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first device leaves the VPN: its address is free for the next device.
    set_templates(&api, &first, &[]).await;
    let third = device_with(&api, &acme, "r3", &[&t]).await;
    let files = download(
        &api,
        &format!("/api/v1/controller/device/{third}/configuration/"),
    )
    .await;
    assert!(files["etc/config/network"].contains("10.8.0.2"));
    let server = download(
        &api,
        &format!(
            "{VPNS}{}/configuration/",
            vpn.body["id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(server["wg0.conf"].matches("[Peer]").count(), 2);
}

#[tokio::test]
async fn openvpn_clients_get_a_certificate_each_revoked_when_they_leave() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let ca = api
        .post(
            "/api/v1/controller/ca/",
            &api.admin,
            json!({"name": "vpn ca", "organization": acme, "key_length": "256"}),
        )
        .await;
    assert_eq!(ca.status, StatusCode::CREATED);
    let missing_ca = api
        .post(
            VPNS,
            &api.admin,
            json!({"name": "ovpn", "host": "vpn.example.com", "organization": acme,
                "backend": "openwisp_controller.vpn_backends.OpenVpn", "config": openvpn_server()}),
        )
        .await;
    assert_eq!(
        missing_ca.body,
        json!({"ca": ["CA is required with this VPN backend"]})
    );
    let vpn = api
        .post(
            VPNS,
            &api.admin,
            json!({"name": "ovpn", "host": "vpn.example.com", "organization": acme, "ca": ca.body["id"],
                "backend": "openwisp_controller.vpn_backends.OpenVpn", "config": openvpn_server()}),
        )
        .await;
    assert_eq!(vpn.status, StatusCode::CREATED, "{:?}", vpn.body);
    assert!(vpn.body["cert"].is_u64(), "a server certificate was issued");
    assert!(vpn.str("dh").contains("BEGIN DH PARAMETERS"));
    let server = download(&api, &format!("{VPNS}{}/configuration/", vpn.str("id"))).await;
    let conf = &server["office.conf"];
    assert!(
        conf.contains("mode server") && conf.contains("dh dh.pem"),
        "{conf}"
    );
    assert!(server["ca.pem"].contains("BEGIN CERTIFICATE"));
    assert!(server["key.pem"].contains("PRIVATE KEY"));

    let template = api
        .post(
            TEMPLATES,
            &api.admin,
            json!({"name": "ovpn client", "organization": acme, "type": "vpn",
                "backend": "netjsonconfig.OpenWrt", "vpn": vpn.body["id"], "config": {}}),
        )
        .await;
    assert_eq!(template.status, StatusCode::CREATED, "{:?}", template.body);
    let t = template.body["id"].clone();
    let device = device_with(&api, &acme, "r1", &[&t]).await;
    let files = download(
        &api,
        &format!("/api/v1/controller/device/{device}/configuration/"),
    )
    .await;
    assert!(
        files["etc/config/openvpn"].contains("vpn.example.com"),
        "{files:?}"
    );
    let client_cert = files
        .iter()
        .find(|(path, _)| path.starts_with("etc/x509/client-"))
        .map(|(_, pem)| pem.clone())
        .expect("the client certificate file");
    let certs = api
        .get("/api/v1/controller/cert/?page_size=100", &api.admin)
        .await;
    let issued = certs.body["results"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["certificate"] == client_cert.as_str())
        })
        .cloned()
        .expect("the client's certificate is stored");
    assert_eq!(issued["ca"], ca.body["id"]);

    // The template leaves the device: the certificate is revoked (and gone).
    set_templates(&api, &device, &[]).await;
    let gone = api
        .get(
            &format!("/api/v1/controller/cert/{}/", issued["id"]),
            &api.admin,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let crl = api
        .get_raw(
            &format!("/api/v1/controller/ca/{}/crl/", ca.body["id"]),
            Some(&api.admin),
        )
        .await;
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("ca.crl"), &crl.body).expect("written");
    let text = Command::new("openssl")
        .args(["crl", "-in", "ca.crl", "-noout", "-text"])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    let serial: u128 = issued["serial_number"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("decimal serial");
    assert!(text.contains(&format!("{serial:X}")), "{text}");
}

#[tokio::test]
async fn vpns_are_checked_filtered_and_kept_to_their_tenants() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let ada = api.user("ada", &[Group::Administrator], &[&acme]).await;
    let bob = api.user("bob", &[Group::Administrator], &[&beta]).await;

    let no_subnet = api
        .post(
            VPNS,
            &ada,
            json!({"name": "wg", "host": "h", "organization": acme,
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(
        no_subnet.body,
        json!({"subnet": ["Subnet is required for this VPN backend."]})
    );
    let bad_backend = api
        .post(VPNS, &ada, json!({"name": "x", "host": "h", "organization": acme, "backend": "ipsec", "config": {}}))
        .await;
    assert_eq!(
        bad_backend.body["backend"],
        json!(["\"ipsec\" is not a valid choice."])
    );
    let bad_config = api
        .post(
            VPNS,
            &ada,
            json!({"name": "wg", "host": "h", "organization": acme, "subnet": "10.1.0.0/24",
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": {"wireguard": [{"port": "x"}]}}),
        )
        .await;
    assert_eq!(bad_config.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_config.body["config"].is_array(),
        "{:?}",
        bad_config.body
    );

    let own = api
        .post(
            VPNS,
            &ada,
            json!({"name": "wg", "host": "h", "organization": acme, "subnet": "10.1.0.0/24",
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);
    let theirs = api
        .post(
            VPNS,
            &bob,
            json!({"name": "wg", "host": "h", "organization": beta, "subnet": "10.2.0.0/24",
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{:?}", theirs.body);
    let shared = api
        .post(
            VPNS,
            &api.admin,
            json!({"name": "shared", "host": "h", "organization": null, "subnet": "10.3.0.0/24",
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::CREATED, "{:?}", shared.body);
    let dup = api
        .post(
            VPNS,
            &ada,
            json!({"name": "WG", "host": "h", "organization": acme, "subnet": "10.4.0.0/24",
                "backend": "openwisp_controller.vpn_backends.Wireguard", "config": wireguard_server()}),
        )
        .await;
    assert_eq!(
        dup.body,
        json!({"non_field_errors": ["The fields organization, name must make a unique set."]})
    );

    for path in [
        format!("{VPNS}{}/", theirs.str("id")),
        format!("{VPNS}{}/configuration/", theirs.str("id")),
    ] {
        assert_eq!(
            api.get(&path, &ada).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        api.delete(&format!("{VPNS}{}/", theirs.str("id")), &ada)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{VPNS}{}/", shared.str("id")), &ada)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.patch(
            &format!("{VPNS}{}/", shared.str("id")),
            &ada,
            json!({"notes": "mine"})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // A template cannot use another organization's VPN.
    let stolen = api
        .post(
            TEMPLATES,
            &ada,
            json!({"name": "t", "organization": acme, "type": "vpn", "backend": "netjsonconfig.OpenWrt",
                "vpn": theirs.body["id"], "config": {}}),
        )
        .await;
    assert_eq!(
        stolen.body["vpn"],
        json!([format!(
            "Invalid pk \"{}\" - object does not exist.",
            theirs.str("id")
        )])
    );

    let ids = |reply: &common::Reply| -> Vec<String> {
        reply.body["results"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = api.get(VPNS, &ada).await;
    assert_eq!(ids(&all), vec![shared.str("id"), own.str("id")]);
    let by_subnet = api.get(&format!("{VPNS}?subnet=10.1.0.0/24"), &ada).await;
    assert_eq!(ids(&by_subnet), vec![own.str("id")]);
    let by_org = api
        .get(&format!("{VPNS}?organization_slug=acme"), &ada)
        .await;
    assert_eq!(ids(&by_org), vec![own.str("id")]);
    let by_backend = api
        .get(
            &format!("{VPNS}?backend=openwisp_controller.vpn_backends.OpenVpn"),
            &ada,
        )
        .await;
    assert_eq!(by_backend.body["count"], 0);
}

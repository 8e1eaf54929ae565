//! Rendered configurations: the archive a device (or a template) downloads, its checksum, the
//! `modified` status that follows the checksum, variables and their precedence, the signed
//! link a config notice carries, and NetJSON the renderer refuses.

mod common;

use axum::http::StatusCode;
use common::{RawReply, TestApi, random_mac, unpack};
use fleetmq_store::{
    ConfigGrant, ConfigOutcome, ConfigStatus, DOWNLOAD_SECRET, DeviceId, Timestamp,
};
use serde_json::{Value, json};

const DEVICES: &str = "/api/v1/controller/device/";
const TEMPLATES: &str = "/api/v1/controller/template/";
const GROUPS: &str = "/api/v1/controller/group/";
const OPENWRT: &str = "netjsonconfig.OpenWrt";

/// A `files` entry showing the variables a rendering got.
fn site_file() -> Value {
    json!({"files": [{
        "path": "/etc/site",
        "mode": "0644",
        "contents": "site={{ site }} name={{ name }} id={{ id }} other={{ other }}"
    }]})
}

async fn download(api: &TestApi, path: &str, token: Option<&str>) -> RawReply {
    api.get_raw(path, token).await
}

async fn create(api: &TestApi, base: &str, body: Value) -> Value {
    let reply = api.post(base, &api.admin, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

async fn site_template(api: &TestApi, org: &str) -> String {
    create(
        api,
        TEMPLATES,
        json!({"name": "site", "organization": org, "backend": OPENWRT,
               "default_values": {"site": "from-template", "other": "kept"},
               "config": site_file()}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn config_path(id: &str) -> String {
    format!("{DEVICES}{id}/configuration/")
}

async fn stored_checksum(api: &TestApi, id: &str) -> String {
    let id = DeviceId(id.parse().expect("uuid"));
    let device = api
        .store()
        .run(move |db| db.device(id))
        .await
        .expect("store")
        .expect("device");
    device.config.expect("a configuration").checksum
}

#[tokio::test]
async fn a_device_downloads_its_rendered_archive_with_variables_by_precedence() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let template = site_template(&api, &acme).await;
    let device = create(
        &api,
        DEVICES,
        json!({"name": "00:11:22:33:44:55", "organization": acme, "mac_address": random_mac(),
               "config": {"backend": OPENWRT, "templates": [template]}}),
    )
    .await;
    let id = device["id"].as_str().expect("id").to_owned();

    let reply = download(&api, &config_path(&id), Some(&api.admin)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    assert_eq!(
        reply.header("content-disposition"),
        "attachment; filename=\"00_11_22_33_44_55.tar.gz\""
    );
    assert_eq!(
        reply.header("x-config-checksum"),
        stored_checksum(&api, &id).await
    );
    let files = unpack(&reply.body);
    assert!(
        files["etc/config/system"].contains("option hostname '00-11-22-33-44-55'"),
        "the device name becomes the hostname: {files:?}"
    );
    assert_eq!(
        files["etc/site"],
        format!("site=from-template name=00:11:22:33:44:55 id={id} other=kept")
    );

    // A group's context overrides the template's default values ...
    let group = create(
        &api,
        GROUPS,
        json!({"name": "g", "organization": acme, "templates": [],
               "context": {"site": "from-group"}}),
    )
    .await;
    let path = format!("{DEVICES}{id}/");
    let moved = api
        .patch(&path, &api.admin, json!({"group": group["id"]}))
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let files = unpack(
        &download(&api, &config_path(&id), Some(&api.admin))
            .await
            .body,
    );
    assert!(files["etc/site"].starts_with("site=from-group "));

    // ... and the configuration's own context overrides the group's; the device's own
    // variables (name, id) cannot be overridden.
    let own = api
        .patch(
            &path,
            &api.admin,
            json!({"config": {"context": {"site": "own", "name": "spoofed"}}}),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
    let files = unpack(
        &download(&api, &config_path(&id), Some(&api.admin))
            .await
            .body,
    );
    assert!(
        files["etc/site"].starts_with("site=own name=00:11:22:33:44:55 "),
        "{files:?}"
    );

    // The same configuration downloads as the same bytes.
    let again = download(&api, &config_path(&id), Some(&api.admin)).await;
    assert_eq!(
        again.body,
        download(&api, &config_path(&id), Some(&api.admin))
            .await
            .body
    );
}

#[tokio::test]
async fn status_turns_modified_only_when_the_checksum_changes() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let template = site_template(&api, &acme).await;
    let device = create(
        &api,
        DEVICES,
        json!({"name": "gw", "organization": acme, "mac_address": random_mac(),
               "config": {"backend": OPENWRT, "templates": [template]}}),
    )
    .await;
    assert_eq!(device["config"]["status"], "modified");
    let id = device["id"].as_str().expect("id").to_owned();
    let path = format!("{DEVICES}{id}/");
    let first = stored_checksum(&api, &id).await;
    assert_eq!(first.len(), 32);

    let device_id = DeviceId(id.parse().expect("uuid"));
    let applied = |checksum: Option<String>| ConfigOutcome {
        status: ConfigStatus::Applied,
        checksum,
        error_reason: String::new(),
    };
    let outcome = applied(Some(first.clone()));
    let taken = api
        .store()
        .run(move |db| db.record_config_outcome(device_id, outcome))
        .await
        .expect("store");
    assert!(taken);
    assert_eq!(
        api.get(&path, &api.admin).await.body["config"]["status"],
        "applied"
    );

    // A variable no file uses changes nothing the device would download.
    let unused = api
        .patch(
            &path,
            &api.admin,
            json!({"config": {"context": {"unused": "x"}}}),
        )
        .await;
    assert_eq!(
        unused.body["config"]["status"], "applied",
        "{:?}",
        unused.body
    );
    assert_eq!(stored_checksum(&api, &id).await, first);

    // A change of the template it uses does.
    let changed = api
        .patch(
            &format!("{TEMPLATES}{template}/"),
            &api.admin,
            json!({"default_values": {"site": "elsewhere", "other": "kept"}}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(
        api.get(&path, &api.admin).await.body["config"]["status"],
        "modified"
    );
    let second = stored_checksum(&api, &id).await;
    assert_ne!(second, first);

    // A report about the old checksum is stale and ignored; one about the current one counts.
    let stale = applied(Some(first));
    let taken = api
        .store()
        .run(move |db| db.record_config_outcome(device_id, stale))
        .await
        .expect("store");
    assert!(!taken);
    assert_eq!(
        api.get(&path, &api.admin).await.body["config"]["status"],
        "modified"
    );
    let failed = ConfigOutcome {
        status: ConfigStatus::Error,
        checksum: Some(second),
        error_reason: "uci commit failed".into(),
    };
    api.store()
        .run(move |db| db.record_config_outcome(device_id, failed))
        .await
        .expect("store");
    let shown = api.get(&path, &api.admin).await.body;
    assert_eq!(shown["config"]["status"], "error");
    assert_eq!(shown["config"]["error_reason"], "uci commit failed");
}

#[tokio::test]
async fn netjson_the_renderer_refuses_is_a_400_naming_the_bad_value() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let bad_template = api
        .post(
            TEMPLATES,
            &api.admin,
            json!({"name": "bad", "organization": acme, "backend": OPENWRT,
                   "config": {"interfaces": [{"name": "eth0", "type": "ethernet", "mtu": "big"}]}}),
        )
        .await;
    assert_eq!(bad_template.status, StatusCode::BAD_REQUEST);
    let message = bad_template.body["config"][0].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Invalid configuration triggered by \"#/interfaces/0/mtu\""),
        "{message}"
    );

    let bad_device = api
        .post(
            DEVICES,
            &api.admin,
            json!({"name": "gw", "organization": acme, "mac_address": random_mac(),
                   "config": {"backend": OPENWRT, "config": {"interfaces": [{"type": "ethernet"}]}}}),
        )
        .await;
    assert_eq!(bad_device.status, StatusCode::BAD_REQUEST);
    let message = bad_device.body["config"]["config"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("Invalid configuration triggered by \"#/interfaces/0"),
        "{:?}",
        bad_device.body
    );
    // Nothing was stored.
    let listed = api.get(DEVICES, &api.admin).await;
    assert_eq!(listed.body["count"], 0);
}

#[tokio::test]
async fn a_signed_link_downloads_the_configuration_of_its_device_only() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let template = site_template(&api, &acme).await;
    let mut ids = Vec::new();
    for name in ["gw1", "gw2"] {
        let device = create(
            &api,
            DEVICES,
            json!({"name": name, "organization": acme, "mac_address": random_mac(),
                   "config": {"backend": OPENWRT, "templates": [template]}}),
        )
        .await;
        ids.push(device["id"].as_str().expect("id").to_owned());
    }
    let secret = api
        .store()
        .run(|db| db.secret(DOWNLOAD_SECRET))
        .await
        .expect("secret");
    let device = DeviceId(ids[0].parse().expect("uuid"));
    let grant = ConfigGrant::expiring(device, Timestamp::now(), std::time::Duration::from_secs(60));
    let link = grant.link("", &secret);

    let fetched = download(&api, &link, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(
        fetched.header("x-config-checksum"),
        stored_checksum(&api, &ids[0]).await
    );

    // The same grant on the other device's path, a forged signature, an expired grant and
    // no credential at all are refused.
    let other = link.replace(&ids[0], &ids[1]);
    assert_eq!(
        download(&api, &other, None).await.status,
        StatusCode::FORBIDDEN
    );
    let forged = format!("{}0000", &link[..link.len() - 4]);
    assert_eq!(
        download(&api, &forged, None).await.status,
        StatusCode::FORBIDDEN
    );
    let past = Timestamp::from_micros(Timestamp::now().as_micros() - 120_000_000);
    let expired = ConfigGrant::expiring(device, past, std::time::Duration::from_secs(60));
    assert_eq!(
        download(&api, &expired.link("", &secret), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        download(&api, &config_path(&ids[0]), None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_template_downloads_alone_with_its_default_values() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let template = site_template(&api, &acme).await;
    let path = format!("{TEMPLATES}{template}/configuration/");
    let reply = download(&api, &path, Some(&api.admin)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-disposition"),
        "attachment; filename=\"site.tar.gz\""
    );
    let files = unpack(&reply.body);
    assert_eq!(
        files["etc/site"], "site=from-template name={{ name }} id={{ id }} other=kept",
        "variables only a device has stay as written"
    );

    // Another organization's manager does not see it.
    let stranger = api
        .user("stranger", &[fleetmq_store::Group::Administrator], &[&beta])
        .await;
    assert_eq!(
        download(&api, &path, Some(&stranger)).await.status,
        StatusCode::NOT_FOUND
    );
}

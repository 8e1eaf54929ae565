//! Handler tests of the openwisp-config agent protocol (`/controller/device/…`), played in
//! its exact formats, and of organizations' configuration settings
//! (`/api/v1/controller/organization/{id}/config-settings/`).

mod common;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Request, StatusCode};
use common::{RawReply, TestApi, random_mac, unpack};
use serde_json::json;

const OPENWRT: &str = "netjsonconfig.OpenWrt";

fn settings_path(org: &str) -> String {
    format!("/api/v1/controller/organization/{org}/config-settings/")
}

/// POSTs a form-encoded body, as the agent does.
async fn post_form(api: &TestApi, path: &str, pairs: &[(&str, &str)]) -> RawReply {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.join("&")))
        .expect("request");
    api.send(request).await
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn text(reply: &RawReply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The `name: value` lines of a registration answer.
fn field(reply: &RawReply, name: &str) -> String {
    text(reply)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        .unwrap_or_default()
}

/// The organization's shared secret, read through the API.
async fn secret_of(api: &TestApi, org: &str) -> String {
    let reply = api.get(&settings_path(org), &api.admin).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.str("shared_secret")
}

async fn register(
    api: &TestApi,
    secret: &str,
    name: &str,
    mac: &str,
    key: Option<&str>,
) -> RawReply {
    let mut pairs = vec![
        ("secret", secret),
        ("name", name),
        ("mac_address", mac),
        ("backend", OPENWRT),
        ("model", "TP-Link WDR4300"),
        ("os", "OpenWrt 23.05"),
        ("system", "Atheros AR9344"),
    ];
    if let Some(key) = key {
        pairs.push(("key", key));
    }
    post_form(api, "/controller/device/register/", &pairs).await
}

#[tokio::test]
async fn an_agent_registers_then_registers_again_with_its_key_and_keeps_its_device() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let secret = secret_of(&api, &acme).await;
    let mac = random_mac();

    let first = register(
        &api,
        &secret,
        "router-1",
        &mac,
        Some("0123456789abcdef0123"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", text(&first));
    assert_eq!(first.header("x-openwisp-controller"), "true");
    assert!(first.header("content-type").starts_with("text/plain"));
    let body = text(&first);
    assert!(body.starts_with("registration-result: success\n"), "{body}");
    assert_eq!(field(&first, "key"), "0123456789abcdef0123");
    assert_eq!(field(&first, "hostname"), "router-1");
    assert_eq!(field(&first, "is-new"), "1");
    let uuid = field(&first, "uuid");
    assert_eq!(
        uuid.len(),
        32,
        "OpenWISP sends the id without dashes: {uuid}"
    );

    let detail = api
        .get(&format!("/api/v1/controller/device/{uuid}/"), &api.admin)
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.body["organization"], json!(acme));
    assert_eq!(detail.body["model"], "TP-Link WDR4300");
    assert_eq!(detail.body["config"]["backend"], OPENWRT);

    // The agent restarts and registers again with the same key: same device, renamed.
    let again = register(
        &api,
        &secret,
        "router-one",
        &mac,
        Some("0123456789abcdef0123"),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", text(&again));
    assert_eq!(field(&again, "uuid"), uuid);
    assert_eq!(field(&again, "is-new"), "0");
    assert_eq!(field(&again, "hostname"), "router-one");

    // An agent whose hostname is the default sends its MAC: the name an operator gave stays.
    let by_mac = register(&api, &secret, &mac, &mac, Some("0123456789abcdef0123")).await;
    assert_eq!(field(&by_mac, "hostname"), "router-one");
    let list = api.get("/api/v1/controller/device/", &api.admin).await;
    assert_eq!(list.body["count"], 1);
}

#[tokio::test]
async fn registration_refuses_missing_parameters_unknown_secrets_and_disabled_organizations() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let secret = secret_of(&api, &acme).await;

    let missing = post_form(
        &api,
        "/controller/device/register/",
        &[
            ("secret", &secret),
            ("mac_address", &random_mac()),
            ("backend", OPENWRT),
        ],
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&missing),
        "error: missing required parameter \"name\"\n"
    );
    assert_eq!(missing.header("x-openwisp-controller"), "true");

    let unknown = register(&api, "not-the-secret", "router-1", &random_mac(), None).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&unknown), "error: unrecognized secret");

    let backend = post_form(
        &api,
        "/controller/device/register/",
        &[
            ("secret", &secret),
            ("name", "router-1"),
            ("mac_address", &random_mac()),
            ("backend", "netjsonconfig.Nope"),
        ],
    )
    .await;
    assert_eq!(backend.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&backend), "error: wrong backend\n");

    let off = api
        .patch(
            &settings_path(&acme),
            &api.admin,
            json!({"registration_enabled": false}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
    let disabled = register(&api, &secret, "router-1", &random_mac(), None).await;
    assert_eq!(disabled.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&disabled), "error: registration disabled");
    let list = api.get("/api/v1/controller/device/", &api.admin).await;
    assert_eq!(list.body["count"], 0);
}

#[tokio::test]
async fn update_info_changes_the_device_with_its_key_only() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let secret = secret_of(&api, &acme).await;
    let reg = register(&api, &secret, "router-1", &random_mac(), None).await;
    let (uuid, key) = (field(&reg, "uuid"), field(&reg, "key"));
    let path = format!("/controller/device/update-info/{uuid}/");

    let wrong = post_form(&api, &path, &[("key", "wrong-key-wrong-key"), ("os", "x")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&wrong), "error: wrong key\n");
    let missing = post_form(&api, &path, &[("os", "x")]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&missing),
        "error: missing required parameter \"key\"\n"
    );
    let unknown = post_form(
        &api,
        &format!("/controller/device/update-info/{}/", uuid::Uuid::new_v4()),
        &[("key", &key)],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let ok = post_form(
        &api,
        &path,
        &[("key", &key), ("os", "OpenWrt 24.10"), ("model", "")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", text(&ok));
    assert_eq!(text(&ok), "update-info: success");
    let detail = api
        .get(&format!("/api/v1/controller/device/{uuid}/"), &api.admin)
        .await;
    assert_eq!(detail.body["os"], "OpenWrt 24.10");
    assert_eq!(
        detail.body["model"], "TP-Link WDR4300",
        "blank values are ignored"
    );
}

#[tokio::test]
async fn config_settings_are_for_the_organizations_managers_and_secrets_are_unique() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let other = api.org("other").await;
    let manager = api.user("manager", &[], &[&acme]).await;

    let own = api.get(&settings_path(&acme), &manager).await;
    assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
    assert_eq!(own.body["registration_enabled"], true);
    assert_eq!(own.str("shared_secret").len(), 32);
    assert_eq!(own.body["context"], json!({}));
    assert_eq!(
        api.get(&settings_path(&other), &manager).await.status,
        StatusCode::NOT_FOUND
    );

    let put = api
        .put(
            &settings_path(&acme),
            &manager,
            json!({"shared_secret": "acme-secret", "context": {"ssid": "acme"}}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["context"], json!({"ssid": "acme"}));
    assert_eq!(put.body["registration_enabled"], true);

    let blank = api
        .patch(
            &settings_path(&acme),
            &manager,
            json!({"shared_secret": ""}),
        )
        .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        blank.body["shared_secret"],
        json!(["This field may not be blank."])
    );
    let long = api
        .patch(
            &settings_path(&acme),
            &manager,
            json!({"shared_secret": "s".repeat(33)}),
        )
        .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    let required = api.put(&settings_path(&acme), &manager, json!({})).await;
    assert_eq!(
        required.body["shared_secret"],
        json!(["This field is required."])
    );

    let clash = api
        .patch(
            &settings_path(&other),
            &api.admin,
            json!({"shared_secret": "acme-secret"}),
        )
        .await;
    assert_eq!(clash.status, StatusCode::BAD_REQUEST);
    assert!(clash.body["shared_secret"].is_array(), "{:?}", clash.body);

    // The new secret registers devices in acme.
    let reg = register(&api, "acme-secret", "router-1", &random_mac(), None).await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", text(&reg));
}

async fn get_raw(api: &TestApi, path: &str) -> RawReply {
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .body(Body::empty())
        .expect("request");
    api.send(request).await
}

#[tokio::test]
async fn an_agent_polls_downloads_and_reports_its_configuration_with_its_organizations_variables() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let other = api.org("other").await;
    for (org, site) in [(&acme, "acme-hq"), (&other, "other-secret-site")] {
        let reply = api
            .patch(
                &settings_path(org),
                &api.admin,
                json!({"context": {"site": site}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let secret = secret_of(&api, &acme).await;
    let reg = register(&api, &secret, "router-1", &random_mac(), None).await;
    let (uuid, key) = (field(&reg, "uuid"), field(&reg, "key"));
    let files = json!({"files": [{"path": "/etc/site", "mode": "0644",
        "contents": "site={{ site }}"}]});
    let patched = api
        .patch(
            &format!("/api/v1/controller/device/{uuid}/"),
            &api.admin,
            json!({"config": {"config": files}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);

    let missing = get_raw(&api, &format!("/controller/device/checksum/{uuid}/")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&missing),
        "error: missing required parameter \"key\"\n"
    );
    let wrong = get_raw(
        &api,
        &format!("/controller/device/checksum/{uuid}/?key=wrong"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&wrong), "error: wrong key\n");
    let unknown = get_raw(
        &api,
        &format!(
            "/controller/device/checksum/{}/?key={key}",
            uuid::Uuid::new_v4()
        ),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let checksum = get_raw(
        &api,
        &format!("/controller/device/checksum/{uuid}/?key={key}"),
    )
    .await;
    assert_eq!(checksum.status, StatusCode::OK);
    assert_eq!(checksum.header("x-openwisp-controller"), "true");
    let checksum = text(&checksum);
    assert_eq!(checksum.len(), 32, "{checksum}");

    let download = get_raw(
        &api,
        &format!("/controller/device/download-config/{uuid}/?key={key}"),
    )
    .await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.header("content-type"), "application/octet-stream");
    assert_eq!(
        download.header("content-disposition"),
        "attachment; filename=router-1.tar.gz"
    );
    let files = unpack(&download.body);
    assert!(
        files
            .get("etc/config/system")
            .is_some_and(|s| s.contains("router-1")),
        "{files:?}"
    );
    assert_eq!(
        files.get("etc/site").map(String::as_str),
        Some("site=acme-hq")
    );
    assert!(!files.values().any(|f| f.contains("other-secret-site")));

    let bad = post_form(
        &api,
        &format!("/controller/device/report-status/{uuid}/"),
        &[("key", &key), ("status", "running")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(text(&bad), "error: wrong status\n");
    let report = post_form(
        &api,
        &format!("/controller/device/report-status/{uuid}/"),
        &[("key", &key), ("status", "applied")],
    )
    .await;
    assert_eq!(report.status, StatusCode::OK, "{}", text(&report));
    assert_eq!(
        text(&report),
        "report-result: success\ncurrent-status: applied\n"
    );
    let detail = api
        .get(&format!("/api/v1/controller/device/{uuid}/"), &api.admin)
        .await;
    assert_eq!(detail.body["config"]["status"], "applied");
}

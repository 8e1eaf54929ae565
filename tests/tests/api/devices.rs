use fleetmq_tests::{TestApp, mac_for};
use serde_json::json;

const DEVICES: &str = "/api/v1/controller/device/";

#[tokio::test]
async fn a_new_device_gets_a_generated_key_and_no_config_for_defaults() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let reply = app
        .post(DEVICES, &app.admin_token, json!({"name": "ap-1", "organization": org, "mac_address": "aa-bb-cc-dd-ee-01",
            "config": {"backend": "netjsonconfig.OpenWrt", "templates": [], "context": {}, "config": {}}}))
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let key = reply.str("key");
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(reply.body["mac_address"], "AA:BB:CC:DD:EE:01");
    assert_eq!(
        reply.body["config"],
        json!(null),
        "a config of defaults only is not created"
    );
    assert_eq!(reply.body["is_deactivated"], false);

    let list = app.get(DEVICES, &app.admin_token).await;
    assert!(
        list.body["results"][0].get("is_deactivated").is_none(),
        "only the detail shows is_deactivated"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_device_fields_are_reported_per_field() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let reply = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "not a hostname!", "organization": org,
            "mac_address": "00:11:22:33:44", "key": "has.dots", "management_ip": "300.1.1.1",
            "config": {"backend": "netjsonconfig.Nope", "context": "x"}}),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body["name"],
        json!(["Must be either a valid hostname or mac address."])
    );
    assert_eq!(
        reply.body["mac_address"],
        json!(["Enter a valid MAC address."])
    );
    assert_eq!(
        reply.body["key"],
        json!(["Key must not contain spaces, dots or slashes."])
    );
    assert_eq!(
        reply.body["management_ip"],
        json!(["Enter a valid IPv4 or IPv6 address."])
    );
    assert_eq!(
        reply.body["config"]["backend"],
        json!(["\"netjsonconfig.Nope\" is not a valid choice."])
    );
    assert!(reply.body["config"]["context"].is_array());

    let missing = app.post(DEVICES, &app.admin_token, json!({})).await;
    assert_eq!(missing.status, 400);
    for field in ["name", "organization", "mac_address"] {
        assert_eq!(
            missing.body[field],
            json!(["This field is required."]),
            "{field}"
        );
    }
    let too_long = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "a".repeat(65), "organization": org, "mac_address": mac_for("x")}),
        )
        .await;
    assert_eq!(
        too_long.body["name"],
        json!(["Ensure this field has no more than 64 characters."])
    );
    let count = app.get(DEVICES, &app.admin_token).await.body["count"].clone();
    assert_eq!(count, 0, "nothing was stored");
    app.shutdown().await;
}

#[tokio::test]
async fn names_macs_and_keys_must_be_unique() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let other = app.create_org("other").await;
    let first = app.create_device(&app.admin_token, &org, "Router-1").await;
    assert_eq!(first.status, 201);

    let same_name = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "router-1", "organization": org, "mac_address": mac_for("x")}),
        )
        .await;
    assert_eq!(same_name.status, 400);
    assert_eq!(
        same_name.body,
        json!({"non_field_errors": ["The fields organization, name must make a unique set."]})
    );

    let same_mac = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "r2", "organization": org, "mac_address": mac_for("Router-1")}),
        )
        .await;
    assert_eq!(
        same_mac.body,
        json!({"non_field_errors": ["The fields organization, mac_address must make a unique set."]})
    );

    let elsewhere = app
        .create_device(&app.admin_token, &other, "Router-1")
        .await;
    assert_eq!(
        elsewhere.status, 201,
        "names are unique per organization only"
    );

    let same_key = app.post(DEVICES, &app.admin_token, json!({"name": "r3", "organization": other, "mac_address": mac_for("r3"), "key": first.str("key")})).await;
    assert_eq!(
        same_key.body,
        json!({"key": ["device with this key already exists."]})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn put_requires_every_required_field_while_patch_merges() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let id = app
        .create_device(&app.admin_token, &org, "r1")
        .await
        .str("id");
    let path = format!("{DEVICES}{id}/");

    let put = app
        .call(
            "PUT",
            &path,
            Some(&app.admin_token),
            Some(json!({"notes": "x"})),
        )
        .await;
    assert_eq!(put.status, 400);
    assert_eq!(put.body["name"], json!(["This field is required."]));

    let patch = app
        .call(
            "PATCH",
            &path,
            Some(&app.admin_token),
            Some(json!({"notes": "rack 4", "config": {"context": {"ssid": "x"}}})),
        )
        .await;
    assert_eq!(patch.status, 200, "{:?}", patch.body);
    assert_eq!(patch.body["name"], "r1");
    assert_eq!(patch.body["notes"], "rack 4");
    assert_eq!(patch.body["config"]["context"], json!({"ssid": "x"}));
    assert_eq!(patch.body["config"]["backend"], "netjsonconfig.OpenWrt");
    assert_eq!(patch.body["config"]["status"], "modified");

    let put = app
        .call(
            "PUT",
            &path,
            Some(&app.admin_token),
            Some(json!({"name": "r1-renamed", "organization": org, "mac_address": mac_for("r1")})),
        )
        .await;
    assert_eq!(put.status, 200);
    assert_eq!(put.body["name"], "r1-renamed");
    assert_eq!(
        put.body["notes"], "rack 4",
        "fields absent from a PUT keep their value, as in DRF"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_active_device_must_be_deactivated_before_deletion() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let operator = app.create_user("olga", &["Operator"], &[&org]).await;
    let id = app.create_device(&operator, &org, "r1").await.str("id");
    let path = format!("{DEVICES}{id}/");

    let refused = app.call("DELETE", &path, Some(&operator), None).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body,
        json!({"detail": "The device must be deactivated prior to deletion"})
    );

    let again = app
        .call("POST", &format!("{path}activate/"), Some(&operator), None)
        .await;
    assert_eq!(
        again.status, 404,
        "activating an active device is not found, as in OpenWISP"
    );

    let deactivated = app
        .call("POST", &format!("{path}deactivate/"), Some(&operator), None)
        .await;
    assert_eq!(deactivated.status, 200);
    assert_eq!(deactivated.body["is_deactivated"], true);

    let edit = app
        .call("PATCH", &path, Some(&operator), Some(json!({"notes": "x"})))
        .await;
    assert_eq!(edit.status, 403, "a deactivated device cannot be changed");

    let deleted = app.call("DELETE", &path, Some(&operator), None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&path, &operator).await.status, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_reactivated_device_can_be_edited_again_and_force_deletes_an_active_one() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let id = app
        .create_device(&app.admin_token, &org, "r1")
        .await
        .str("id");
    let path = format!("{DEVICES}{id}/");
    app.call(
        "POST",
        &format!("{path}deactivate/"),
        Some(&app.admin_token),
        None,
    )
    .await;
    let active = app
        .call(
            "POST",
            &format!("{path}activate/"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(active.status, 200);
    assert_eq!(active.body["is_deactivated"], false);
    assert_eq!(
        app.call(
            "PATCH",
            &path,
            Some(&app.admin_token),
            Some(json!({"notes": "ok"}))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.call(
            "DELETE",
            &format!("{path}?force=true"),
            Some(&app.admin_token),
            None
        )
        .await
        .status,
        204
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_device_key_shorter_than_16_characters_is_refused_and_documented() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let short = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "ap-1", "organization": org,
            "mac_address": mac_for("ap-1"), "key": "k"}),
        )
        .await;
    assert_eq!(short.status, 400, "{:?}", short.body);
    assert_eq!(
        short.body["key"],
        json!(["Ensure this field has at least 16 characters."])
    );

    let created = app
        .post(
            DEVICES,
            &app.admin_token,
            json!({"name": "ap-1", "organization": org,
            "mac_address": mac_for("ap-1"), "key": "0123456789abcdef"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!("{DEVICES}{}/", created.str("id"));
    let patched = app
        .call(
            "PATCH",
            &path,
            Some(&app.admin_token),
            Some(json!({"key": "fifteen-chars-k"})),
        )
        .await;
    assert_eq!(patched.status, 400, "{:?}", patched.body);
    assert_eq!(
        app.get(&path, &app.admin_token).await.str("key"),
        "0123456789abcdef",
        "a refused key leaves the device's key as it was"
    );

    let doc = app.get("/api/v1/openapi.json", &app.admin_token).await;
    let schemas = &doc.body["components"]["schemas"];
    let mut key = &schemas["DeviceWrite"]["properties"]["key"];
    if let Some(name) = key["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        key = &schemas[name];
    }
    assert_eq!(
        key["minLength"], 16,
        "the schema states the rule clients are held to: {key}"
    );
    app.shutdown().await;
}

//! `/api/v1/devices/{id}/npm.system_update/2.0/…`: the REST side of the device API proxy —
//! routes, bodies, limits, permissions and tenancy. The devices here never connect, so every
//! call that reaches the bridge is answered "offline".

use fleetmq_tests::TestApp;
use serde_json::json;

struct Fixture {
    app: TestApp,
    admin: String,
    operator: String,
    nobody: String,
    other: String,
    device: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let beta = app.create_org("beta").await;
    let admin = app.create_user("ada", &["Administrator"], &[&acme]).await;
    let operator = app.create_user("otto", &["Operator"], &[&acme]).await;
    let nobody = app.create_user("nora", &[], &[&acme]).await;
    let other = app.create_user("bea", &["Administrator"], &[&beta]).await;
    let device = app.create_device(&admin, &acme, "ap1").await;
    assert_eq!(device.status, 201, "{:?}", device.body);
    Fixture {
        app,
        admin,
        operator,
        nobody,
        other,
        device: device.str("id"),
    }
}

impl Fixture {
    fn path(&self, rest: &str) -> String {
        format!(
            "/api/v1/devices/{}/npm.system_update/2.0/{rest}",
            self.device
        )
    }
}

#[tokio::test]
async fn known_calls_reach_the_device_and_an_offline_device_is_503() {
    let f = fixture().await;
    for (method, rest, body) in [
        ("GET", "images", None),
        ("GET", "images/items/3", None),
        ("DELETE", "images/items/3", None),
        (
            "POST",
            "images/fetch",
            Some(json!({"url": "http://example.com/fw.bin"})),
        ),
        ("GET", "update", None),
        ("POST", "update/init", None),
        ("POST", "update/reset", None),
        ("POST", "update/start", None),
    ] {
        let reply = f
            .app
            .call(method, &f.path(rest), Some(&f.admin), body)
            .await;
        assert_eq!(reply.status, 503, "{method} {rest}: {:?}", reply.body);
        assert_eq!(reply.body, json!({"detail": "The device is offline."}));
    }
    let upload = f
        .app
        .send_raw(
            "POST",
            &f.path("images/upload"),
            &f.admin,
            "application/octet-stream",
            vec![7; 1024],
        )
        .await;
    assert_eq!(upload.status, 503, "{:?}", upload.body);
    let operator = f.app.get(&f.path("update"), &f.operator).await;
    assert_eq!(operator.status, 503, "operators manage devices");
}

#[tokio::test]
async fn unknown_calls_bad_bodies_and_limits_are_refused_before_the_device_is_asked() {
    let f = fixture().await;
    for (method, rest) in [
        ("GET", "nothing"),
        ("GET", "images/items/abc"),
        ("PUT", "update"),
        ("GET", "update/start"),
        ("GET", "images/upload"),
    ] {
        let reply = f
            .app
            .call(method, &f.path(rest), Some(&f.admin), None)
            .await;
        assert_eq!(reply.status, 404, "{method} {rest}: {:?}", reply.body);
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    let no_url = f
        .app
        .post(&f.path("images/fetch"), &f.admin, json!({}))
        .await;
    assert_eq!(no_url.status, 400);
    assert_eq!(no_url.body, json!({"url": ["This field is required."]}));
    let not_json = f
        .app
        .send_raw(
            "POST",
            &f.path("images/fetch"),
            &f.admin,
            "text/plain",
            b"url".to_vec(),
        )
        .await;
    assert_eq!(not_json.status, 415);

    let wrong_type = f
        .app
        .send_raw(
            "POST",
            &f.path("images/upload"),
            &f.admin,
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        wrong_type.body,
        json!({"detail": "Unsupported media type \"application/json\" in request."})
    );
    let too_large = f
        .app
        .send_raw(
            "POST",
            &f.path("images/upload"),
            &f.admin,
            "application/octet-stream",
            vec![0; 512 * 1024 + 1],
        )
        .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(
        too_large.body,
        json!({"detail": "Request body is too large (the limit is 524288 bytes)."})
    );
}

#[tokio::test]
async fn the_device_api_follows_device_permissions_and_tenancy() {
    let f = fixture().await;
    let anonymous = f.app.call("GET", &f.path("update"), None, None).await;
    assert_eq!(anonymous.status, 401);
    let nobody = f.app.get(&f.path("update"), &f.nobody).await;
    assert_eq!(nobody.status, 403, "{:?}", nobody.body);
    let other = f.app.get(&f.path("update"), &f.other).await;
    assert_eq!(other.status, 404);
    let unknown = f
        .app
        .get(
            &format!(
                "/api/v1/devices/{}/npm.system_update/2.0/update",
                uuid::Uuid::new_v4()
            ),
            &f.admin,
        )
        .await;
    assert_eq!(unknown.status, 404);
    let not_an_id = f
        .app
        .get(
            "/api/v1/devices/nope/npm.system_update/2.0/update",
            &f.admin,
        )
        .await;
    assert_eq!(not_an_id.status, 404);
}

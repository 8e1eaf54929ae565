//! Firmware the simulator accepts: a category, a build and an image of its board's type,
//! created through the REST API (upgrade and external-broker tests share it).

use serde_json::{Value, json};

use crate::TestApp;

/// The image type whose board is the simulator's `sim-board`.
pub const SIM_TYPE: &str = "fleetmq-sim-squashfs-sysupgrade.bin";

/// Creates a category, a build of `version` and its simulator image; returns the build id,
/// the image id and the image's SHA-256.
pub async fn sim_firmware(
    app: &TestApp,
    token: &str,
    org: &str,
    version: &str,
) -> (String, String, String) {
    let category = app
        .post(
            "/api/v1/firmware-upgrader/category/",
            token,
            json!({"name": format!("sim {version}"), "organization": org}),
        )
        .await;
    assert_eq!(category.status, 201, "{:?}", category.body);
    sim_build(app, token, &category.str("id"), version).await
}

/// Creates a build of `version` in `category` with its simulator image; returns the build
/// id, the image id and the image's SHA-256.
pub async fn sim_build(
    app: &TestApp,
    token: &str,
    category: &str,
    version: &str,
) -> (String, String, String) {
    let build = app
        .post(
            "/api/v1/firmware-upgrader/build/",
            token,
            json!({"category": category, "version": version, "os": "OpenWrt fleetmq-sim"}),
        )
        .await;
    assert_eq!(build.status, 201, "{:?}", build.body);
    let build = build.str("id");
    let mut bytes = format!("FLEETMQ-SIM-FW {version}\n").into_bytes();
    bytes.extend((0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let form = reqwest::multipart::Form::new().text("type", SIM_TYPE).part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("sysupgrade.bin"),
    );
    let response = app
        .http
        .post(format!(
            "{}/api/v1/firmware-upgrader/build/{build}/image/",
            app.base
        ))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status().as_u16(), 201);
    let image: Value = response.json().await.expect("image JSON");
    let id = image["id"].as_str().unwrap_or_default().to_owned();
    let image = app
        .get(
            &format!("/api/v1/firmware-upgrader/build/{build}/image/{id}/"),
            token,
        )
        .await;
    (build, id, image.str("sha256"))
}

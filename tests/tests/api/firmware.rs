use fleetmq_tests::TestApp;
use serde_json::json;

const CATEGORIES: &str = "/api/v1/firmware-upgrader/category/";
const BUILDS: &str = "/api/v1/firmware-upgrader/build/";

async fn upload(
    app: &TestApp,
    token: &str,
    build: &str,
    kind: &str,
    bytes: Vec<u8>,
) -> fleetmq_tests::Reply {
    let form = reqwest::multipart::Form::new()
        .text("type", kind.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("image.bin"),
        );
    let response = app
        .http
        .post(format!("{}{BUILDS}{build}/image/", app.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    fleetmq_tests::Reply { status, body }
}

#[tokio::test]
async fn categories_and_builds_follow_openwisps_rules() {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let admin = app.create_user("ada", &["Administrator"], &[&acme]).await;
    let operator = app.create_user("otto", &["Operator"], &[&acme]).await;

    let category = app
        .post(
            CATEGORIES,
            &admin,
            json!({"name": "Routers", "organization": acme}),
        )
        .await;
    assert_eq!(category.status, 201, "{:?}", category.body);
    let twice = app
        .post(
            CATEGORIES,
            &admin,
            json!({"name": "routers", "organization": acme}),
        )
        .await;
    assert_eq!(
        twice.body,
        json!({"non_field_errors": ["The fields name, organization must make a unique set."]})
    );
    let shared = app
        .post(
            CATEGORIES,
            &admin,
            json!({"name": "Shared", "organization": null}),
        )
        .await;
    assert_eq!(
        shared.body,
        json!({"organization": ["This field may not be null."]})
    );
    let shared = app
        .post(
            CATEGORIES,
            &app.admin_token,
            json!({"name": "Shared", "organization": null}),
        )
        .await;
    assert_eq!(shared.status, 201);
    let edit_shared = app
        .call(
            "PATCH",
            &format!("{CATEGORIES}{}/", shared.str("id")),
            Some(&admin),
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(edit_shared.status, 403);
    assert_eq!(
        edit_shared.body["detail"],
        "Only superusers can create or edit shared categories"
    );
    assert_eq!(
        app.get(CATEGORIES, &operator).await.status,
        403,
        "operators have no category permission"
    );

    let build = app
        .post(
            BUILDS,
            &admin,
            json!({"category": category.str("id"), "version": "1.0.0", "os": "OpenWrt 23.05"}),
        )
        .await;
    assert_eq!(build.status, 201, "{:?}", build.body);
    assert_eq!(build.body["category_relation"]["name"], "Routers");
    let duplicate = app
        .post(
            BUILDS,
            &admin,
            json!({"category": category.str("id"), "version": "1.0.0"}),
        )
        .await;
    assert_eq!(
        duplicate.body,
        json!({"non_field_errors": ["The fields category, version must make a unique set."]})
    );
    app.post(
        BUILDS,
        &admin,
        json!({"category": category.str("id"), "version": "1.1.0", "os": "OpenWrt 24.10"}),
    )
    .await;
    let too_long = app
        .post(
            BUILDS,
            &admin,
            json!({"category": category.str("id"), "version": "1".repeat(33)}),
        )
        .await;
    assert_eq!(too_long.status, 400);

    assert_eq!(
        app.get(BUILDS, &operator).await.body["count"],
        2,
        "operators view builds"
    );
    assert_eq!(
        app.post(
            BUILDS,
            &operator,
            json!({"category": category.str("id"), "version": "9"})
        )
        .await
        .status,
        403
    );
    let by_version = app.get(&format!("{BUILDS}?version=1.1.0"), &admin).await;
    assert_eq!(by_version.body["count"], 1);
    let by_os = app
        .get(&format!("{BUILDS}?os=OpenWrt%2023.05"), &admin)
        .await;
    assert_eq!(by_os.body["results"][0]["version"], "1.0.0");
    let shared_build = app
        .post(
            BUILDS,
            &app.admin_token,
            json!({"category": shared.str("id"), "version": "0.1"}),
        )
        .await;
    assert_eq!(shared_build.status, 201);
    assert_eq!(
        app.get(BUILDS, &admin).await.body["count"],
        3,
        "shared builds are visible"
    );
    let own = app
        .get(&format!("{BUILDS}?organization=acme"), &admin)
        .await;
    assert_eq!(
        own.body["count"], 2,
        "the organization filter leaves shared builds out"
    );
    let nobody = app
        .get(&format!("{BUILDS}?organization=nobody"), &admin)
        .await;
    assert_eq!(nobody.body["count"], 0);
    let all_categories = app.get(CATEGORIES, &admin).await;
    let own_categories = app
        .get(&format!("{CATEGORIES}?organization=acme"), &admin)
        .await;
    assert_eq!(
        own_categories.body["count"].as_u64(),
        all_categories.body["count"].as_u64().map(|n| n - 1),
        "the organization filter leaves the shared category out: {:?}",
        own_categories.body
    );
    assert!(
        own_categories.body["results"]
            .as_array()
            .is_some_and(|list| list.iter().all(|c| c["organization"] == json!(acme))),
        "only acme's own categories"
    );
    let no_categories = app
        .get(&format!("{CATEGORIES}?organization=nobody"), &admin)
        .await;
    assert_eq!(no_categories.body["count"], 0);
    assert_eq!(
        app.get(&format!("{BUILDS}?category={}", shared.str("id")), &admin)
            .await
            .body["count"],
        1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn images_upload_with_their_checksum_and_download_with_range_and_etag() {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let category = app
        .post(
            CATEGORIES,
            &app.admin_token,
            json!({"name": "Routers", "organization": acme}),
        )
        .await
        .str("id");
    let build = app
        .post(
            BUILDS,
            &app.admin_token,
            json!({"category": category, "version": "2.0"}),
        )
        .await
        .str("id");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

    let image = upload(
        &app,
        &app.admin_token,
        &build,
        "ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
        bytes.clone(),
    )
    .await;
    assert_eq!(image.status, 201, "{:?}", image.body);
    let sha = image.str("sha256");
    assert_eq!(sha.len(), 64);
    assert_eq!(image.body["size"], 100_000);
    let same_type = upload(
        &app,
        &app.admin_token,
        &build,
        "ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
        vec![1, 2, 3],
    )
    .await;
    assert_eq!(
        same_type.body,
        json!({"non_field_errors": ["The fields build, type must make a unique set."]})
    );

    let download = format!("{}{}", app.base, image.str("file"));
    let whole = app
        .http
        .get(&download)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(whole.headers()["content-length"], "100000");
    assert_eq!(whole.bytes().await.expect("body").to_vec(), bytes);

    let resumed = app
        .http
        .get(&download)
        .bearer_auth(&app.admin_token)
        .header("range", "bytes=99000-")
        .send()
        .await
        .expect("sent");
    assert_eq!(resumed.status(), 206);
    assert_eq!(
        resumed.headers()["content-range"],
        "bytes 99000-99999/100000"
    );
    assert_eq!(
        resumed.bytes().await.expect("body").to_vec(),
        bytes[99_000..].to_vec()
    );
    let beyond = app
        .http
        .get(&download)
        .bearer_auth(&app.admin_token)
        .header("range", "bytes=200000-")
        .send()
        .await
        .expect("sent");
    assert_eq!(beyond.status(), 416);
    let cached = app
        .http
        .get(&download)
        .bearer_auth(&app.admin_token)
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await
        .expect("sent");
    assert_eq!(cached.status(), 304);

    let detail = format!("{BUILDS}{build}/image/{}/", image.str("id"));
    assert_eq!(
        app.call(
            "PATCH",
            &detail,
            Some(&app.admin_token),
            Some(json!({"type": "x"}))
        )
        .await
        .status,
        405
    );
    assert_eq!(
        app.call("DELETE", &detail, Some(&app.admin_token), None)
            .await
            .status,
        204
    );
    let gone = app
        .http
        .get(&download)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(gone.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn an_image_over_the_limit_is_refused_and_nothing_is_kept() {
    let app = TestApp::spawn_with(|c| c.api.firmware_upload_limit = 64 * 1024).await;
    let acme = app.create_org("acme").await;
    let category = app
        .post(
            CATEGORIES,
            &app.admin_token,
            json!({"name": "Routers", "organization": acme}),
        )
        .await
        .str("id");
    let build = app
        .post(
            BUILDS,
            &app.admin_token,
            json!({"category": category, "version": "2.0"}),
        )
        .await
        .str("id");
    let refused = upload(
        &app,
        &app.admin_token,
        &build,
        "board",
        vec![0u8; 64 * 1024 + 1],
    )
    .await;
    assert_eq!(refused.status, 413);
    let listed = app
        .get(&format!("{BUILDS}{build}/image/"), &app.admin_token)
        .await;
    assert_eq!(listed.body["count"], 0);
    let no_file = upload(&app, &app.admin_token, &build, "", vec![1]).await;
    assert_eq!(no_file.status, 400);
    let unknown = upload(
        &app,
        &app.admin_token,
        &uuid::Uuid::new_v4().to_string(),
        "board",
        vec![1],
    )
    .await;
    assert_eq!(unknown.status, 404);
    app.shutdown().await;
}

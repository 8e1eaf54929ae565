//! Handler tests of a build's images: `/api/v1/firmware-upgrader/build/{id}/image/` (multipart
//! upload, list), `/{build_id}/image/{id}/` (detail, delete) and `/{build_id}/image/{id}/download/`
//! (ETag, Range, and a device's signed download grant instead of a token).

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, IF_NONE_MATCH, RANGE};
use axum::http::{Request, StatusCode};
use common::firmware::{
    Fleet, NO_CREDENTIALS, PERMISSION_DENIED, Part, SIM_TYPE, UNIFI_TYPE, column, images_path,
};
use common::{RawReply, TestApi};
use fleetmq_api::ApiConfig;
use fleetmq_store::{DOWNLOAD_SECRET, DeviceId, DownloadGrant, ImageId, Timestamp};
use serde_json::{Value, json};
use uuid::Uuid;

fn image_path(build: &str, image: &str) -> String {
    format!("{}{image}/", images_path(build))
}

fn download_path(build: &str, image: &str) -> String {
    format!("{}download/", image_path(build, image))
}

/// GETs `path` with a token (if any) and extra headers.
async fn download(
    api: &TestApi,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> RawReply {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    api.send(request.body(Body::empty()).expect("request"))
        .await
}

/// The query of a download grant for `device` to fetch `image`, valid for an hour from `from`.
async fn grant(api: &TestApi, image: &str, device: &str, from: Timestamp) -> String {
    let secret = api
        .store()
        .run(|db| db.secret(DOWNLOAD_SECRET))
        .await
        .expect("the download secret");
    DownloadGrant::expiring(
        ImageId(image.parse().expect("an image id")),
        DeviceId(device.parse().expect("a device id")),
        from,
        Duration::from_secs(3600),
    )
    .query(&secret)
}

/// The images of a build `token` sees, by id.
async fn listed(api: &TestApi, build: &str, query: &str, token: &str) -> Vec<String> {
    let reply = api
        .get(&format!("{}{query}", images_path(build)), token)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
    let ids = column(&reply.body, "id");
    assert_eq!(reply.body["count"], ids.len(), "{query}");
    ids
}

// Uploads.

#[tokio::test]
async fn an_upload_is_stored_with_its_size_and_checksum() {
    let f = Fleet::start().await;
    let bytes = b"unifi firmware 2.0";
    let uploaded = f
        .post_multipart(
            &images_path(&f.new_build),
            Some(&f.admin),
            &[Part::file(bytes), Part::text("type", UNIFI_TYPE)],
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let id = uploaded.str("id");
    assert_eq!(uploaded.body["build"], f.new_build.as_str());
    assert_eq!(uploaded.body["type"], UNIFI_TYPE);
    assert_eq!(uploaded.body["size"], bytes.len());
    assert_eq!(uploaded.body["file"], download_path(&f.new_build, &id));
    let sha = uploaded.str("sha256");
    assert_eq!(sha.len(), 64, "{sha}");
    assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()), "{sha}");

    let shown = f.get(&image_path(&f.new_build, &id), &f.operator).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body, uploaded.body);
    let file = download(&f, &download_path(&f.new_build, &id), Some(&f.admin), &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(&file.body[..], bytes);
}

#[tokio::test]
async fn a_second_image_of_the_same_type_is_refused() {
    let f = Fleet::start().await;
    let reply = f
        .post_multipart(
            &images_path(&f.new_build),
            Some(&f.admin),
            &[Part::text("type", SIM_TYPE), Part::file(b"again")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"non_field_errors": ["The fields build, type must make a unique set."]})
    );
    assert_eq!(
        listed(&f, &f.new_build, "", &f.admin).await,
        [f.new_image.as_str()]
    );
}

#[tokio::test]
async fn an_upload_form_is_checked_field_by_field() {
    let f = Fleet::start().await;
    let path = images_path(&f.new_build);
    for (parts, errors) in [
        (
            vec![Part::text("type", UNIFI_TYPE)],
            json!({"file": ["No file was submitted."]}),
        ),
        (
            vec![Part::file(b"bytes")],
            json!({"type": ["This field is required."]}),
        ),
        (
            vec![Part::text("type", "nope.bin"), Part::file(b"bytes")],
            json!({"type": ["\"nope.bin\" is not a valid choice."]}),
        ),
        (
            vec![Part::text("type", "a b"), Part::file(b"bytes")],
            json!({"type": ["Use letters, digits and - _ . + only."]}),
        ),
        (
            vec![Part::text("type", ""), Part::file(b"bytes")],
            json!({"type": ["This field may not be blank."]}),
        ),
        (
            vec![Part::text("type", "nope.bin")],
            json!({"type": ["\"nope.bin\" is not a valid choice."],
                   "file": ["No file was submitted."]}),
        ),
    ] {
        let reply = f.post_multipart(&path, Some(&f.admin), &parts).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{errors}");
        assert_eq!(reply.body, errors);
    }
    assert_eq!(
        listed(&f, &f.new_build, "", &f.admin).await,
        [f.new_image.as_str()],
        "nothing was stored"
    );
}

#[tokio::test]
async fn an_empty_upload_form_names_both_missing_fields() {
    let f = Fleet::start().await;
    let reply = f
        .post_multipart(&images_path(&f.new_build), Some(&f.admin), &[])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"file": ["No file was submitted."], "type": ["This field is required."]})
    );
}

#[tokio::test]
async fn an_upload_that_is_no_multipart_form_is_an_unsupported_media_type() {
    let f = Fleet::start().await;
    let path = images_path(&f.new_build);
    let json_body = f
        .post(&path, &f.admin, json!({"type": UNIFI_TYPE, "file": "AAAA"}))
        .await;
    assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        json_body.body,
        json!({"detail": "Unsupported media type \"application/json\" in request."})
    );
    let bare = f.call("POST", &path, Some(&f.admin), None).await;
    assert_eq!(bare.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        bare.body,
        json!({"detail": "Unsupported media type \"\" in request."})
    );
    // The build is looked up first: another organization's is not found.
    let foreign = f
        .post(&images_path(&f.beta_build), &f.admin, json!({}))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(listed(&f, &f.new_build, "", &f.admin).await.len(), 1);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_too_large_and_nothing_is_kept() {
    let api = TestApi::start_with(ApiConfig {
        firmware_upload_limit: 16,
        ..ApiConfig::default()
    })
    .await;
    let acme = api.org("acme").await;
    let category = api.category("routers", Some(&acme)).await;
    let build = api.build(&category, "1.0").await;
    let path = images_path(&build);

    let refused = api
        .post_multipart(
            &path,
            Some(&api.admin),
            &[Part::text("type", SIM_TYPE), Part::file(&[7; 17])],
        )
        .await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        refused.body,
        json!({"detail": "Request body is too large (the limit is 16 bytes)."})
    );
    assert!(listed(&api, &build, "", &api.admin).await.is_empty());

    let fits = api
        .post_multipart(
            &path,
            Some(&api.admin),
            &[Part::text("type", SIM_TYPE), Part::file(&[7; 16])],
        )
        .await;
    assert_eq!(fits.status, StatusCode::CREATED, "{:?}", fits.body);
    assert_eq!(fits.body["size"], 16);
}

#[tokio::test]
async fn uploads_need_the_add_permission_and_the_builds_organization() {
    let f = Fleet::start().await;
    let path = images_path(&f.new_build);
    let form = [Part::text("type", UNIFI_TYPE), Part::file(b"bytes")];
    for (token, status, body) in f.refused() {
        let reply = f.post_multipart(&path, token, &form).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.body, body);
    }
    let operator = f.post_multipart(&path, Some(&f.operator), &form).await;
    assert_eq!(operator.status, StatusCode::FORBIDDEN);
    assert_eq!(operator.body, json!({"detail": PERMISSION_DENIED}));
    for (path, token) in [
        (path.clone(), &f.other),
        (images_path(&Uuid::new_v4().to_string()), &f.root),
        (images_path("nope"), &f.root),
    ] {
        let reply = f.post_multipart(&path, Some(token), &form).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    assert_eq!(listed(&f, &f.new_build, "", &f.root).await.len(), 1);
}

/// A shared build (its category has no organization) with a simulator image, made by the
/// superuser; returns the build and the image.
async fn shared_build(f: &Fleet) -> (String, String) {
    let shared = f.category("everyone", None).await;
    let build = f.build(&shared, "3.0").await;
    let image = f.image(&build, SIM_TYPE, b"shared 3.0").await;
    (build, image["id"].as_str().expect("an id").to_owned())
}

#[tokio::test]
async fn only_a_superuser_adds_images_to_a_shared_build() {
    let f = Fleet::start().await;
    let (build, image) = shared_build(&f).await;

    let upload = f
        .post_multipart(
            &images_path(&build),
            Some(&f.admin),
            &[Part::text("type", UNIFI_TYPE), Part::file(b"bytes")],
        )
        .await;
    assert_eq!(upload.status, StatusCode::FORBIDDEN, "{:?}", upload.body);
    assert_eq!(listed(&f, &build, "", &f.root).await, [image.as_str()]);
}

#[tokio::test]
async fn only_a_superuser_removes_images_of_a_shared_build() {
    let f = Fleet::start().await;
    let (build, image) = shared_build(&f).await;

    let delete = f.delete(&image_path(&build, &image), &f.admin).await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN, "{:?}", delete.body);
    assert_eq!(listed(&f, &build, "", &f.root).await, [image.as_str()]);
}

#[tokio::test]
async fn a_shared_builds_images_are_seen_and_downloaded_by_every_organization() {
    let f = Fleet::start().await;
    let (build, image) = shared_build(&f).await;
    for token in [&f.operator, &f.other] {
        assert_eq!(listed(&f, &build, "", token).await, [image.as_str()]);
        let file = download(&f, &download_path(&build, &image), Some(token), &[]).await;
        assert_eq!(file.status, StatusCode::OK);
        assert_eq!(&file.body[..], b"shared 3.0");
    }
    let query = grant(&f, &image, &f.beta_device, Timestamp::now()).await;
    let file = download(
        &f,
        &format!("{}?{query}", download_path(&build, &image)),
        None,
        &[],
    )
    .await;
    assert_eq!(
        file.status,
        StatusCode::OK,
        "any organization's device may run it"
    );
}

// List, detail, delete.

#[tokio::test]
async fn a_builds_images_are_listed_and_filtered_by_type() {
    let f = Fleet::start().await;
    let unifi = f.image(&f.new_build, UNIFI_TYPE, b"unifi 2.0").await;
    let unifi = unifi["id"].as_str().expect("an id");

    let mut all = listed(&f, &f.new_build, "", &f.operator).await;
    all.sort();
    let mut both = vec![f.new_image.clone(), unifi.to_owned()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(
        listed(&f, &f.new_build, &format!("?type={UNIFI_TYPE}"), &f.admin).await,
        [unifi]
    );
    assert!(
        listed(&f, &f.new_build, "?type=nope.bin", &f.admin)
            .await
            .is_empty()
    );
    assert_eq!(listed(&f, &f.new_build, "?type=", &f.admin).await.len(), 2);
    assert_eq!(
        listed(&f, &f.old_build, "", &f.admin).await,
        [f.old_image.as_str()]
    );
}

#[tokio::test]
async fn images_are_refused_to_callers_without_the_view_permission() {
    let f = Fleet::start().await;
    let image = image_path(&f.new_build, &f.new_image);
    for (token, status, body) in f.refused() {
        for (method, path) in [
            ("GET", images_path(&f.new_build)),
            ("GET", image.clone()),
            ("DELETE", image.clone()),
            ("GET", download_path(&f.new_build, &f.new_image)),
        ] {
            let reply = f.call(method, &path, token, None).await;
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(reply.body, body, "{method} {path}");
        }
    }
    let operator = f.delete(&image, &f.operator).await;
    assert_eq!(operator.status, StatusCode::FORBIDDEN);
    assert_eq!(operator.body, json!({"detail": PERMISSION_DENIED}));
    assert_eq!(f.get(&image, &f.root).await.status, StatusCode::OK);
}

#[tokio::test]
async fn another_organizations_images_are_not_found() {
    let f = Fleet::start().await;
    let image = image_path(&f.new_build, &f.new_image);
    for (method, path) in [
        ("GET", images_path(&f.new_build)),
        (
            "GET",
            format!("{}?type={SIM_TYPE}", images_path(&f.new_build)),
        ),
        ("GET", image.clone()),
        ("DELETE", image.clone()),
        ("GET", download_path(&f.new_build, &f.new_image)),
    ] {
        let reply = f.call(method, &path, Some(&f.other), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"detail": "Not found."}),
            "{method} {path}"
        );
    }
    assert_eq!(f.get(&image, &f.root).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_image_is_found_only_under_its_own_build() {
    let f = Fleet::start().await;
    for path in [
        image_path(&f.old_build, &f.new_image),
        download_path(&f.old_build, &f.new_image),
        image_path(&f.new_build, &Uuid::new_v4().to_string()),
        image_path(&f.new_build, "nope"),
        image_path("nope", &f.new_image),
        download_path(&Uuid::new_v4().to_string(), &f.new_image),
    ] {
        let reply = f.call("GET", &path, Some(&f.root), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body, json!({"detail": "Not found."}), "{path}");
    }
    let wrong_build = f
        .delete(&image_path(&f.old_build, &f.new_image), &f.root)
        .await;
    assert_eq!(wrong_build.status, StatusCode::NOT_FOUND);
    assert_eq!(
        listed(&f, &f.new_build, "", &f.root).await,
        [f.new_image.as_str()]
    );
}

#[tokio::test]
async fn a_deleted_image_is_gone_with_its_file() {
    let f = Fleet::start().await;
    let image = image_path(&f.new_build, &f.new_image);
    let deleted = f.delete(&image, &f.admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);

    assert_eq!(f.get(&image, &f.admin).await.status, StatusCode::NOT_FOUND);
    let file = download(
        &f,
        &download_path(&f.new_build, &f.new_image),
        Some(&f.admin),
        &[],
    )
    .await;
    assert_eq!(file.status, StatusCode::NOT_FOUND);
    assert!(listed(&f, &f.new_build, "", &f.admin).await.is_empty());
    assert_eq!(
        f.delete(&image, &f.admin).await.status,
        StatusCode::NOT_FOUND
    );
    let again = f
        .post_multipart(
            &images_path(&f.new_build),
            Some(&f.admin),
            &[
                Part::text("type", SIM_TYPE),
                Part::file(b"firmware 2.0 again"),
            ],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "the type is free again: {:?}",
        again.body
    );
}

// Downloads.

#[tokio::test]
async fn a_download_carries_its_etag_length_and_version() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let sha = f
        .get(&image_path(&f.new_build, &f.new_image), &f.admin)
        .await
        .str("sha256");

    let file = download(&f, &path, Some(&f.operator), &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(&file.body[..], b"firmware 2.0");
    assert_eq!(file.header("content-type"), "application/octet-stream");
    assert_eq!(file.header("content-length"), "12");
    assert_eq!(file.header("accept-ranges"), "bytes");
    assert_eq!(file.header("etag"), format!("\"{sha}\""));
    assert_eq!(file.header("x-firmware-version"), "2.0");
    assert_eq!(
        file.header("content-disposition"),
        format!("attachment; filename=\"{SIM_TYPE}.bin\"")
    );

    let etag = format!("\"{sha}\"");
    let unchanged = download(
        &f,
        &path,
        Some(&f.admin),
        &[(IF_NONE_MATCH.as_str(), &etag)],
    )
    .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());
    let changed = download(
        &f,
        &path,
        Some(&f.admin),
        &[(IF_NONE_MATCH.as_str(), "\"other\"")],
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(&changed.body[..], b"firmware 2.0");
}

#[tokio::test]
async fn a_download_resumes_from_a_range_and_refuses_one_past_the_end() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    for (range, bytes, content_range) in [
        ("bytes=2-5", &b"rmwa"[..], "bytes 2-5/12"),
        ("bytes=9-", &b"2.0"[..], "bytes 9-11/12"),
        ("bytes=-3", &b"2.0"[..], "bytes 9-11/12"),
        ("bytes=10-99", &b".0"[..], "bytes 10-11/12"),
    ] {
        let part = download(&f, &path, Some(&f.admin), &[(RANGE.as_str(), range)]).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&part.body[..], bytes, "{range}");
        assert_eq!(part.header("content-range"), content_range, "{range}");
        assert_eq!(
            part.header("content-length"),
            bytes.len().to_string(),
            "{range}"
        );
    }
    for range in ["bytes=12-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1"] {
        let refused = download(&f, &path, Some(&f.admin), &[(RANGE.as_str(), range)]).await;
        assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(refused.header("content-range"), "bytes */12", "{range}");
    }
}

#[tokio::test]
async fn a_device_downloads_its_image_with_its_grant_and_no_token() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let query = grant(&f, &f.new_image, &f.device, Timestamp::now()).await;

    let file = download(&f, &format!("{path}?{query}"), None, &[]).await;
    assert_eq!(file.status, StatusCode::OK, "{:?}", file.json());
    assert_eq!(&file.body[..], b"firmware 2.0");
    assert_eq!(file.header("x-firmware-version"), "2.0");
    let part = download(
        &f,
        &format!("{path}?{query}"),
        None,
        &[(RANGE.as_str(), "bytes=0-3")],
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part.body[..], b"firm");

    let anonymous = download(&f, &path, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json(), json!({"detail": NO_CREDENTIALS}));
}

#[tokio::test]
async fn a_forged_expired_or_borrowed_grant_is_forbidden() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let valid = grant(&f, &f.new_image, &f.device, Timestamp::now()).await;
    let expired = grant(
        &f,
        &f.new_image,
        &f.device,
        Timestamp::from_micros(Timestamp::now().as_micros() - 2 * 3600 * 1_000_000),
    )
    .await;
    let other_image = grant(&f, &f.old_image, &f.device, Timestamp::now()).await;
    let expires = (Timestamp::now().as_micros() / 1_000_000) + 3600;
    let forged = format!(
        "device={}&expires={expires}&signature={}",
        f.device,
        "ab".repeat(32)
    );
    let other_device = valid.replace(&f.device, &f.beta_device);
    for query in [
        forged,
        format!("device={}&expires={expires}&signature=not-hex", f.device),
        format!("device={}", f.device),
        "signature=00".to_owned(),
        format!("device=nope&expires={expires}&signature=00"),
        expired,
        other_image,
        other_device,
    ] {
        let reply = download(&f, &format!("{path}?{query}"), None, &[]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{query}");
        assert_eq!(
            reply.json(),
            json!({"detail": "Invalid or expired download link."}),
            "{query}"
        );
    }
}

#[tokio::test]
async fn a_valid_grant_is_refused_to_a_device_that_may_not_run_the_image() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let foreign = grant(&f, &f.new_image, &f.beta_device, Timestamp::now()).await;
    let reply = download(&f, &format!("{path}?{foreign}"), None, &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"detail": "This device may not download this image."})
    );

    let mine = grant(&f, &f.new_image, &f.device, Timestamp::now()).await;
    f.deactivate(&f.device).await;
    let reply = download(&f, &format!("{path}?{mine}"), None, &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"detail": "This device may not download this image."})
    );
}

#[tokio::test]
async fn a_token_decides_over_a_grant() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let valid = grant(&f, &f.new_image, &f.device, Timestamp::now()).await;
    let forged = format!("device={}&expires=1&signature=00", f.device);

    let admin = download(&f, &format!("{path}?{forged}"), Some(&f.admin), &[]).await;
    assert_eq!(
        admin.status,
        StatusCode::OK,
        "a manager's token needs no grant"
    );
    for (token, status) in [
        ("not-a-token", StatusCode::UNAUTHORIZED),
        (f.other.as_str(), StatusCode::NOT_FOUND),
        (f.nobody.as_str(), StatusCode::FORBIDDEN),
    ] {
        let reply = download(&f, &format!("{path}?{valid}"), Some(token), &[]).await;
        assert_eq!(
            reply.status, status,
            "a valid grant does not save a bad token"
        );
    }
}

#[tokio::test]
async fn a_download_with_another_authorization_scheme_is_not_authenticated() {
    let f = Fleet::start().await;
    let path = download_path(&f.new_build, &f.new_image);
    let reply = f
        .send(
            Request::get(&path)
                .header(AUTHORIZATION, format!("Token {}", f.admin))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), json!({"detail": NO_CREDENTIALS}));
}

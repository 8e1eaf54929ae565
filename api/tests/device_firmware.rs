//! Handler tests of `/api/v1/firmware-upgrader/device/{device_id}/firmware/`: which image a
//! device should run. PUT creates (201) or replaces (200) it, PATCH changes it, both start an
//! upgrade operation; who may do it, which images fit, and in which order refusals come.

mod common;

use axum::http::StatusCode;
use common::firmware::{
    Fleet, PERMISSION_DENIED, SIM_TYPE, UNIFI_TYPE, column, device_operations_path, firmware_path,
};
use serde_json::{Value, json};
use uuid::Uuid;

const DEACTIVATED: &str = "Firmware upgrades are not allowed for deactivated devices.";

fn does_not_exist(pk: &str) -> Value {
    json!({"image": [format!("Invalid pk \"{pk}\" - object does not exist.")]})
}

/// The ids of a device's operations, newest first.
async fn operations(f: &Fleet, device: &str) -> Vec<String> {
    let reply = f.get(&device_operations_path(device), &f.root).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    column(&reply.body, "id")
}

#[tokio::test]
async fn put_creates_then_replaces_the_firmware_and_starts_an_upgrade_each_time() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    assert_eq!(f.get(&path, &f.admin).await.status, StatusCode::NOT_FOUND);

    let created = f.put(&path, &f.admin, json!({"image": f.old_image})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["image"], f.old_image.as_str());
    assert_eq!(created.body["installed"], false);
    let op = &created.body["upgrade_operation"];
    assert_eq!(op["device"], f.device.as_str());
    assert_eq!(op["image"], f.old_image.as_str());
    assert_eq!(op["status"], "in-progress");
    assert_eq!(op["batch"], Value::Null);

    let shown = f.get(&path, &f.operator).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(shown.body["image"], f.old_image.as_str());
    assert_eq!(shown.body["installed"], false);
    assert!(
        shown.body.get("upgrade_operation").is_none(),
        "only writes show the operation: {:?}",
        shown.body
    );

    let replaced = f.put(&path, &f.admin, json!({"image": f.new_image})).await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["image"], f.new_image.as_str());
    assert_eq!(
        operations(&f, &f.device).await,
        [
            replaced.body["upgrade_operation"]["id"]
                .as_str()
                .unwrap_or_default(),
            op["id"].as_str().unwrap_or_default()
        ]
    );
    assert_eq!(
        f.get(&path, &f.admin).await.body["image"],
        f.new_image.as_str()
    );
}

#[tokio::test]
async fn patch_changes_the_image_or_without_one_upgrades_to_the_same_again() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    f.upgrade(&f.device, &f.old_image).await;

    let again = f.patch(&path, &f.admin, json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["image"], f.old_image.as_str());
    assert_eq!(
        again.body["upgrade_operation"]["image"],
        f.old_image.as_str()
    );

    let changed = f
        .patch(&path, &f.admin, json!({"image": f.new_image}))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["image"], f.new_image.as_str());
    assert_eq!(
        changed.body["upgrade_operation"]["image"],
        f.new_image.as_str()
    );
    assert_eq!(operations(&f, &f.device).await.len(), 3);
}

#[tokio::test]
async fn patch_and_delete_find_nothing_before_a_firmware_is_set() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);

    for body in [json!({"image": f.old_image}), json!({"image": 5})] {
        let reply = f.patch(&path, &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    assert_eq!(
        f.delete(&path, &f.admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        operations(&f, &f.device).await.is_empty(),
        "no upgrade started"
    );
}

#[tokio::test]
async fn delete_forgets_the_firmware_but_keeps_its_operations() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    let op = f.upgrade(&f.device, &f.old_image).await;

    let deleted = f.delete(&path, &f.admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(f.get(&path, &f.admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(operations(&f, &f.device).await, [op.as_str()]);
    assert_eq!(
        f.delete(&path, &f.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_firmware_body_is_checked_field_by_field() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    let unknown = Uuid::new_v4().to_string();
    for (body, errors) in [
        (json!({}), json!({"image": ["This field is required."]})),
        (
            json!({"image": null}),
            json!({"image": ["This field may not be null."]}),
        ),
        (json!({"image": "nope"}), does_not_exist("nope")),
        (
            json!({"image": 5}),
            json!({"image": ["Incorrect type. Expected pk value, received int."]}),
        ),
        (json!({"image": unknown}), does_not_exist(&unknown)),
    ] {
        let reply = f.put(&path, &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, errors, "{body}");
    }
    let not_json = f
        .send(
            axum::http::Request::put(&path)
                .header("authorization", format!("Bearer {}", f.admin))
                .header("content-type", "text/plain")
                .body(axum::body::Body::from("image"))
                .expect("request"),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        not_json.json(),
        json!({"detail": "Unsupported media type \"text/plain\" in request."})
    );
    assert_eq!(f.get(&path, &f.admin).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_image_must_fit_the_devices_model() {
    let f = Fleet::start().await;
    let unifi = f.image(&f.new_build, UNIFI_TYPE, b"unifi 2.0").await;

    let reply = f
        .put(
            &firmware_path(&f.device),
            &f.admin,
            json!({"image": unifi["id"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"image": ["Device model and image model do not match"]})
    );
    let modelless = f.device(&f.acme, "ap2").await;
    let reply = f
        .put(
            &firmware_path(&modelless),
            &f.admin,
            json!({"image": f.new_image}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"image": ["Device model and image model do not match"]})
    );
    assert!(operations(&f, &f.device).await.is_empty());
}

#[tokio::test]
async fn an_image_of_another_organization_does_not_exist_even_for_a_superuser() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    for token in [&f.admin, &f.root] {
        let reply = f.put(&path, token, json!({"image": f.beta_image})).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.body, does_not_exist(&f.beta_image));
    }
    assert!(operations(&f, &f.device).await.is_empty());
}

#[tokio::test]
async fn an_image_of_a_shared_category_suits_every_organization() {
    let f = Fleet::start().await;
    let shared = f.category("everyone", None).await;
    let build = f.build(&shared, "3.0").await;
    let image = f.image(&build, SIM_TYPE, b"shared 3.0").await;

    let reply = f
        .put(
            &firmware_path(&f.device),
            &f.admin,
            json!({"image": image["id"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["image"], image["id"]);
}

#[tokio::test]
async fn a_deactivated_device_is_refused_before_its_body_is_read() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    f.upgrade(&f.device, &f.old_image).await;
    f.deactivate(&f.device).await;

    for (method, body) in [
        ("PUT", json!({"image": f.new_image})),
        ("PUT", json!({"image": 5})),
        ("PATCH", json!({})),
    ] {
        let reply = f
            .call(method, &path, Some(&f.admin), Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {body}");
        assert_eq!(
            reply.body,
            json!({"detail": DEACTIVATED}),
            "{method} {body}"
        );
    }
    let shown = f.get(&path, &f.admin).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["image"], f.old_image.as_str(), "unchanged");
}

#[tokio::test]
async fn callers_without_the_right_are_refused_and_change_nothing() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    let op = f.upgrade(&f.device, &f.old_image).await;
    let body = json!({"image": f.new_image});

    for (token, status, answer) in f.refused() {
        for method in ["GET", "PUT", "PATCH", "DELETE"] {
            let reply = f.call(method, &path, token, Some(body.clone())).await;
            assert_eq!(reply.status, status, "{method}");
            assert_eq!(reply.body, answer, "{method}");
        }
    }
    for method in ["PUT", "PATCH", "DELETE"] {
        let reply = f
            .call(method, &path, Some(&f.operator), Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "operator {method}");
        assert_eq!(reply.body, json!({"detail": PERMISSION_DENIED}));
    }
    assert_eq!(
        f.get(&path, &f.root).await.body["image"],
        f.old_image.as_str()
    );
    assert_eq!(operations(&f, &f.device).await, [op.as_str()]);
}

#[tokio::test]
async fn another_organizations_device_is_not_found_before_the_body_is_judged() {
    let f = Fleet::start().await;
    let path = firmware_path(&f.device);
    let op = f.upgrade(&f.device, &f.old_image).await;

    for (method, body) in [
        ("GET", None),
        ("PUT", Some(json!({"image": f.new_image}))),
        ("PUT", Some(json!({"image": 5}))),
        ("PATCH", Some(json!({"image": null}))),
        ("DELETE", None),
    ] {
        let reply = f.call(method, &path, Some(&f.other), body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(reply.body, json!({"detail": "Not found."}), "{method}");
    }
    for missing in [
        firmware_path(&Uuid::new_v4().to_string()),
        firmware_path("nope"),
    ] {
        let reply = f.put(&missing, &f.root, json!({"image": 5})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
    }
    assert_eq!(
        f.get(&path, &f.root).await.body["image"],
        f.old_image.as_str()
    );
    assert_eq!(operations(&f, &f.device).await, [op.as_str()]);
}

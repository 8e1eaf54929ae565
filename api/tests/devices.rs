//! Handler tests of `/api/v1/controller/device/`: who may do what, another organization's
//! devices, the messages of invalid bodies, paging and filters.

mod common;

use axum::http::StatusCode;
use common::{TestApi, random_mac};
use fleetmq_store::Group;
use serde_json::{Value, json};

const DEVICES: &str = "/api/v1/controller/device/";
const REQUIRED: &str = "This field is required.";
const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";

/// The path of one device.
fn device_path(id: &str) -> String {
    format!("{DEVICES}{id}/")
}

#[tokio::test]
async fn an_operator_registers_changes_deactivates_and_deletes_devices() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;

    let created = api
        .post(
            DEVICES,
            &operator,
            json!({"name": "gw-1", "organization": acme, "mac_address": random_mac()}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["organization"], acme.as_str());
    let path = device_path(&created.str("id"));

    let patched = api.patch(&path, &operator, json!({"name": "gw-2"})).await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["name"], "gw-2");
    let replaced = api
        .put(
            &path,
            &operator,
            json!({"name": "gw-3", "organization": acme, "mac_address": random_mac()}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["name"], "gw-3");

    let deactivated = api
        .call("POST", &format!("{path}deactivate/"), Some(&operator), None)
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{:?}", deactivated.body);
    assert_eq!(deactivated.body["is_deactivated"], true);
    let deleted = api.delete(&path, &operator).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(
        api.get(&path, &operator).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_manager_in_no_group_may_not_touch_devices() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "gw-1").await;
    let nobody = api.user("nora", &[], &[&acme]).await;
    let denied = json!({"detail": PERMISSION_DENIED});

    let listed = api.get(DEVICES, &nobody).await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);
    assert_eq!(listed.body, denied);
    let created = api
        .post(
            DEVICES,
            &nobody,
            json!({"name": "gw-2", "organization": acme, "mac_address": random_mac()}),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    assert_eq!(created.body, denied);
    let patched = api
        .patch(&device_path(&device), &nobody, json!({"name": "gw-3"}))
        .await;
    assert_eq!(patched.status, StatusCode::FORBIDDEN);
    assert_eq!(patched.body, denied);
    let deleted = api.delete(&device_path(&device), &nobody).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    assert_eq!(deleted.body, denied);

    let all = api.get(DEVICES, &api.admin).await;
    assert_eq!(all.body["count"], 1, "nothing was created");
    assert_eq!(
        all.body["results"][0]["name"], "gw-1",
        "nothing was changed"
    );
}

#[tokio::test]
async fn another_organizations_device_is_not_found() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let theirs = api.device(&beta, "their-gw").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let path = device_path(&theirs);
    let not_found = json!({"detail": "Not found."});
    let body = json!({"name": "mine-now", "organization": acme, "mac_address": random_mac()});

    let listed = api.get(DEVICES, &operator).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["count"], 0, "{:?}", listed.body);
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(body.clone())),
        ("PATCH", Some(body)),
        ("DELETE", None),
    ] {
        let reply = api.call(method, &path, Some(&operator), body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(reply.body, not_found, "{method}");
    }
    let deactivated = api
        .call("POST", &format!("{path}deactivate/"), Some(&operator), None)
        .await;
    assert_eq!(deactivated.status, StatusCode::NOT_FOUND);
    assert_eq!(deactivated.body, not_found);

    let kept = api.get(&path, &api.admin).await;
    assert_eq!(kept.status, StatusCode::OK);
    assert_eq!(kept.body["name"], "their-gw", "nothing was changed");
    assert_eq!(kept.body["is_deactivated"], false, "nor deactivated");
}

#[tokio::test]
async fn replacing_a_device_requires_its_name_organization_and_mac_address() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "gw-1").await;

    let replaced = api.put(&device_path(&device), &api.admin, json!({})).await;
    assert_eq!(replaced.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        replaced.body,
        json!({"name": [REQUIRED], "organization": [REQUIRED], "mac_address": [REQUIRED]})
    );
}

#[tokio::test]
async fn a_name_that_is_not_a_string_is_refused() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "gw-1").await;

    let patched = api
        .patch(&device_path(&device), &api.admin, json!({"name": 42}))
        .await;
    assert_eq!(patched.status, StatusCode::BAD_REQUEST);
    assert_eq!(patched.body, json!({"name": ["Not a valid string."]}));
    assert_eq!(
        api.get(&device_path(&device), &api.admin).await.body["name"],
        "gw-1"
    );
}

#[tokio::test]
async fn deleting_an_active_device_is_forbidden() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "gw-1").await;

    let deleted = api.delete(&device_path(&device), &api.admin).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    assert_eq!(
        deleted.body,
        json!({"detail": "The device must be deactivated prior to deletion"})
    );
    assert_eq!(
        api.get(&device_path(&device), &api.admin).await.status,
        StatusCode::OK,
        "the device is still there"
    );
}

#[tokio::test]
async fn page_size_must_be_positive_and_is_capped_at_a_hundred() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    for n in 0..101 {
        api.device(&acme, &format!("gw-{n}")).await;
    }

    let zero = api.get(&format!("{DEVICES}?page_size=0"), &api.admin).await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        zero.body,
        json!({"page_size": ["Ensure this value is greater than or equal to 1."]})
    );

    let many = api
        .get(&format!("{DEVICES}?page_size=1000"), &api.admin)
        .await;
    assert_eq!(many.status, StatusCode::OK, "{:?}", many.body);
    assert_eq!(many.body["count"], 101);
    let results = many.body["results"].as_array().map_or(0, Vec::len);
    assert_eq!(results, 100, "a page holds at most 100 devices");
    assert_ne!(many.body["next"], Value::Null, "the rest is on page 2");
}

#[tokio::test]
async fn an_unknown_configuration_status_filter_is_refused() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    api.device(&acme, "gw-1").await;

    let listed = api
        .get(&format!("{DEVICES}?config__status=bogus"), &api.admin)
        .await;
    assert_eq!(listed.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        listed.body,
        json!({"config__status": ["Select a valid choice. bogus is not one of the available choices."]})
    );
}

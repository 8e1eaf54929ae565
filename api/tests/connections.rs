//! Handler tests of `/api/v1/controller/device/{id}/connection/`: who may do what, and the
//! messages of invalid bodies.

mod common;

use axum::http::StatusCode;
use common::TestApi;
use fleetmq_store::Group;
use serde_json::{Value, json};

const CREDENTIALS: &str = "/api/v1/connection/credential/";
const REQUIRED: &str = "This field is required.";
const MQTT_STRATEGY: &str = "fleetmq.connection.update_strategies.mqtt";

fn connections(device: &str) -> String {
    format!("/api/v1/controller/device/{device}/connection/")
}

/// Every connection route of a device (list path `path`, one connection at `detail`), each
/// with a valid body where it takes one.
fn every_route(
    path: &str,
    detail: &str,
    credentials: &str,
) -> Vec<(&'static str, String, Option<Value>)> {
    let body = json!({"credentials": credentials});
    vec![
        ("GET", path.to_owned(), None),
        ("POST", path.to_owned(), Some(body.clone())),
        ("GET", detail.to_owned(), None),
        ("PUT", detail.to_owned(), Some(body)),
        ("PATCH", detail.to_owned(), Some(json!({"enabled": false}))),
        ("DELETE", detail.to_owned(), None),
    ]
}

/// Creates MQTT credentials of `org` as the superuser; returns their id.
async fn mqtt_credentials(api: &TestApi, org: &str, name: &str) -> String {
    let reply = api
        .post(
            CREDENTIALS,
            &api.admin,
            json!({"connector": "mqtt", "name": name, "organization": org, "params": {}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.str("id")
}

#[tokio::test]
async fn operators_manage_connections_and_members_without_a_group_may_not() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let no_group = api.user("ned", &[], &[&acme]).await;
    let device = api.device(&acme, "router").await;
    let credentials = mqtt_credentials(&api, &acme, "mqtt").await;
    let path = connections(&device);

    let created = api
        .post(&path, &operator, json!({"credentials": credentials}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        created.body["update_strategy"], MQTT_STRATEGY,
        "inferred from the MQTT connector"
    );
    assert_eq!(created.body["enabled"], true);
    let detail = format!("{path}{}/", created.str("id"));

    for (method, target, body) in every_route(&path, &detail, &credentials) {
        let reply = api.call(method, &target, Some(&no_group), body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {target}");
        assert_eq!(
            reply.body,
            json!({"detail": "You do not have permission to perform this action."})
        );
    }

    let listed = api.get(&path, &operator).await;
    assert_eq!(
        listed.body["count"], 2,
        "the one created and the device key's own, added with the device"
    );
    let deleted = api.delete(&detail, &operator).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&detail, &operator).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn another_organizations_device_connections_are_not_found() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let manager = api.user("otto", &[Group::Operator], &[&acme]).await;
    let theirs = api.device(&beta, "theirs").await;
    let credentials = mqtt_credentials(&api, &beta, "beta-mqtt").await;
    let path = connections(&theirs);
    let connection = api
        .post(&path, &api.admin, json!({"credentials": credentials}))
        .await
        .str("id");
    let detail = format!("{path}{connection}/");

    for (method, target, body) in every_route(&path, &detail, &credentials) {
        let reply = api.call(method, &target, Some(&manager), body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {target}");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    let mine = api.device(&acme, "mine").await;
    let foreign = api
        .post(
            &connections(&mine),
            &manager,
            json!({"credentials": credentials}),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        foreign.body,
        json!({
            "credentials": [format!("Invalid pk \"{credentials}\" - object does not exist.")],
            "update_strategy": ["could not determine update strategy automatically, please select one"],
        })
    );
    assert_eq!(
        api.get(&detail, &api.admin).await.body["enabled"],
        true,
        "nothing was changed"
    );
}

#[tokio::test]
async fn connection_ids_that_are_not_uuids_are_not_found() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "router").await;
    for path in [
        connections("not-a-uuid"),
        format!("{}not-a-uuid/", connections(&device)),
        format!(
            "/api/v1/controller/device/x/connection/{}/",
            uuid::Uuid::new_v4()
        ),
    ] {
        let reply = api.get(&path, &api.admin).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn invalid_connection_fields_get_their_own_messages() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let device = api.device(&acme, "router").await;
    let credentials = mqtt_credentials(&api, &acme, "mqtt").await;
    let path = connections(&device);

    let missing = api.post(&path, &api.admin, json!({"enabled": true})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body, json!({"credentials": [REQUIRED]}));
    let wrong_types = api
        .post(
            &path,
            &api.admin,
            json!({"credentials": 5, "update_strategy": "x".repeat(129), "enabled": "no"}),
        )
        .await;
    assert_eq!(
        wrong_types.body,
        json!({
            "credentials": ["Incorrect type. Expected pk value, received int."],
            "update_strategy": ["Ensure this field has no more than 128 characters."],
            "enabled": ["Must be a valid boolean."],
        })
    );

    let id = api
        .post(&path, &api.admin, json!({"credentials": credentials}))
        .await
        .str("id");
    let detail = format!("{path}{id}/");
    let null = api
        .patch(&detail, &api.admin, json!({"credentials": null}))
        .await;
    assert_eq!(
        null.body,
        json!({"credentials": ["This field may not be null."]})
    );
    let put = api
        .put(&detail, &api.admin, json!({"enabled": false}))
        .await;
    assert_eq!(
        put.body,
        json!({"credentials": [REQUIRED]}),
        "PUT replaces: credentials must be there"
    );
    let disabled = api
        .patch(&detail, &api.admin, json!({"enabled": false}))
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.body["enabled"], false);
    assert_eq!(disabled.body["update_strategy"], MQTT_STRATEGY, "kept");
}

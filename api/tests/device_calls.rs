//! Handler tests without a socket for the routes that act on one device (commands,
//! coordinates, telemetry, the npm.system_update proxy) and for image types: who may do what,
//! and what a bad body or query is told.
//!
//! The whole API ([`fleetmq_api::router`]) runs over a store in a temporary directory with
//! [`NoHooks`], so no broker runs and every device call is answered "unavailable".

mod common;

use std::ops::Deref;

use axum::http::StatusCode;
use common::TestApi;
use fleetmq_store::{ConnectionFields, Connector, CredentialsFields, DeviceId, Group};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The API over a fresh store: two organizations, a device in the first, and users.
struct Fleet {
    api: TestApi,
    /// A superuser.
    root: String,
    /// Administrator of acme (not a superuser).
    admin: String,
    /// Operator of acme: devices, locations, commands (add and view), firmware (view).
    operator: String,
    /// Manages acme but has no group, so no permission.
    nobody: String,
    /// Administrator of beta only.
    other: String,
    /// Operator of no organization.
    homeless: String,
    /// A device of acme.
    device: String,
}

impl Deref for Fleet {
    type Target = TestApi;

    fn deref(&self) -> &TestApi {
        &self.api
    }
}

impl Fleet {
    async fn start() -> Self {
        let api = TestApi::start().await;
        let acme = api.org("acme").await;
        let beta = api.org("beta").await;
        let admin = api.user("ada", &[Group::Administrator], &[&acme]).await;
        let device = api.device(&acme, "ap1").await;
        Fleet {
            root: api.admin.clone(),
            operator: api.user("otto", &[Group::Operator], &[&acme]).await,
            nobody: api.user("nora", &[], &[&acme]).await,
            other: api.user("bea", &[Group::Administrator], &[&beta]).await,
            homeless: api.user("hal", &[Group::Operator], &[]).await,
            admin,
            device,
            api,
        }
    }

    /// `/api/v1/controller/device/{device}/{rest}`.
    fn device_path(&self, rest: &str) -> String {
        format!("/api/v1/controller/device/{}/{rest}", self.device)
    }

    /// Gives the device an enabled MQTT connection, as its first connect does.
    async fn connect_device(&self) {
        let device = DeviceId(self.device.parse().expect("a device id"));
        self.store()
            .run(move |db| {
                let org = db.device(device)?.expect("the device").fields.organization;
                let credentials = db.create_credentials(CredentialsFields {
                    organization: Some(org),
                    name: "mqtt".to_owned(),
                    connector: Connector::Mqtt,
                    auto_add: false,
                    params: Map::new(),
                })?;
                db.create_connection(
                    device,
                    ConnectionFields {
                        credentials: credentials.id,
                        update_strategy: String::new(),
                        enabled: true,
                    },
                )
            })
            .await
            .expect("connection created");
    }
}

// Commands.

#[tokio::test]
async fn an_operator_may_send_and_read_commands_and_a_user_without_permission_may_not() {
    let f = Fleet::start().await;
    f.connect_device().await;
    let commands = f.device_path("command/");

    let sent = f
        .post(&commands, &f.operator, json!({"type": "reboot"}))
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{:?}", sent.body);
    assert_eq!(sent.body["status"], "in-progress");
    assert_eq!(sent.body["input"], Value::Null);
    let listed = f.get(&commands, &f.operator).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["count"], 1);
    let detail = format!("{commands}{}/", sent.str("id"));
    assert_eq!(
        f.get(&detail, &f.operator).await.body["id"],
        sent.body["id"]
    );

    for (token, status) in [
        (Some(f.nobody.as_str()), StatusCode::FORBIDDEN),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let send = f
            .call("POST", &commands, token, Some(json!({"type": "reboot"})))
            .await;
        assert_eq!(send.status, status, "{:?}", send.body);
        assert_eq!(f.call("GET", &commands, token, None).await.status, status);
        assert_eq!(f.call("GET", &detail, token, None).await.status, status);
    }
}

#[tokio::test]
async fn another_tenants_commands_are_not_found() {
    let f = Fleet::start().await;
    f.connect_device().await;
    let commands = f.device_path("command/");
    let sent = f.post(&commands, &f.admin, json!({"type": "reboot"})).await;
    let detail = format!("{commands}{}/", sent.str("id"));

    assert_eq!(
        f.get(&commands, &f.other).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.get(&detail, &f.other).await.status, StatusCode::NOT_FOUND);
    let sent_elsewhere = f.post(&commands, &f.other, json!({"type": "reboot"})).await;
    assert_eq!(sent_elsewhere.status, StatusCode::NOT_FOUND);
    for path in [
        format!("{commands}{}/", Uuid::new_v4()),
        format!("{commands}nope/"),
        format!("/api/v1/controller/device/nope/command/{}/", sent.str("id")),
    ] {
        assert_eq!(
            f.get(&path, &f.admin).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_command_on_a_deactivated_device_is_forbidden_but_its_commands_are_listed() {
    let f = Fleet::start().await;
    f.connect_device().await;
    let deactivated = f
        .call("POST", &f.device_path("deactivate/"), Some(&f.admin), None)
        .await;
    assert!(deactivated.status.is_success(), "{:?}", deactivated.body);

    let commands = f.device_path("command/");
    let refused = f.post(&commands, &f.admin, json!({"type": "reboot"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!({"detail": "You do not have permission to perform this action."})
    );
    assert_eq!(f.get(&commands, &f.admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_command_body_is_checked_field_by_field() {
    let f = Fleet::start().await;
    // The MQTT connection the device got when it was created, disabled: nothing to send on.
    let own = f.get(&f.device_path("connection/"), &f.admin).await;
    assert_eq!(own.body["count"], 1, "{:?}", own.body);
    let own = own.body["results"][0]["id"].as_str().expect("its id");
    let disabled = f
        .call(
            "PATCH",
            &f.device_path(&format!("connection/{own}/")),
            Some(&f.admin),
            Some(json!({"enabled": false})),
        )
        .await;
    assert!(disabled.status.is_success(), "{:?}", disabled.body);
    let commands = f.device_path("command/");
    let no_connection = f.post(&commands, &f.admin, json!({"type": "reboot"})).await;
    assert_eq!(no_connection.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        no_connection.body,
        json!({"device": ["Device has no credentials assigned."]})
    );

    f.connect_device().await;
    for (body, errors) in [
        (json!({}), json!({"type": ["This field is required."]})),
        (
            json!({"type": null}),
            json!({"type": ["This field may not be null."]}),
        ),
        (
            json!({"type": "shutdown", "input": {"command": ""}}),
            json!({"type": ["\"shutdown\" is not a valid choice."]}),
        ),
        (
            json!({"type": "custom", "input": {"command": "  "}}),
            json!({"input": {"command": ["This field is required and may not be blank."]}}),
        ),
        (
            json!({"type": "custom"}),
            json!({"input": {"command": ["This field is required and may not be blank."]}}),
        ),
        (
            json!({"type": "change_password",
                   "input": {"password": "short", "confirm_password": "x".repeat(31)}}),
            json!({"input": {
                "password": ["Ensure this field has at least 6 characters."],
                "confirm_password": ["Ensure this field has no more than 30 characters."]
            }}),
        ),
        (
            json!({"type": "change_password",
                   "input": {"password": "abcdef", "confirm_password": "abcdeg"}}),
            json!({"input": {"confirm_password": ["Passwords do not match."]}}),
        ),
    ] {
        let reply = f.post(&commands, &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, errors, "{body}");
    }

    let custom = f
        .post(
            &commands,
            &f.admin,
            json!({"type": "custom", "input": {"command": " uptime ", "extra": 1}}),
        )
        .await;
    assert_eq!(custom.status, StatusCode::CREATED, "{:?}", custom.body);
    assert_eq!(
        custom.body["input"],
        json!({"command": "uptime"}),
        "the command is stored trimmed, and only the command"
    );
}

// Coordinates.

fn feature(lng: Value, lat: Value) -> Value {
    json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]},
           "properties": {}})
}

#[tokio::test]
async fn a_device_reads_and_moves_its_coordinates_with_its_key_alone() {
    let f = Fleet::start().await;
    let path = f.device_path("coordinates/");
    let key = f.get(&f.device_path(""), &f.admin).await.str("key");
    let by_key = format!("{path}?key={key}");

    assert_eq!(
        f.call("GET", &by_key, None, None).await.status,
        StatusCode::NOT_FOUND,
        "no location yet"
    );
    let moved = f
        .call(
            "PUT",
            &by_key,
            None,
            Some(feature(json!(12.5), json!(41.9))),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["type"], "Feature");
    let read = f.call("GET", &by_key, None, None).await;
    assert_eq!(
        read.body["geometry"],
        json!({"type": "Point", "coordinates": [12.5, 41.9]})
    );

    let wrong_key = format!("{path}?key=nope");
    assert_eq!(
        f.call("GET", &wrong_key, None, None).await.status,
        StatusCode::UNAUTHORIZED,
        "a wrong key is no access at all"
    );
    assert_eq!(
        f.call("GET", &wrong_key, Some(&f.operator), None)
            .await
            .status,
        StatusCode::OK,
        "but a user's token still counts"
    );
    assert_eq!(
        f.call(
            "GET",
            "/api/v1/controller/device/nope/coordinates/",
            None,
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND,
        "an id that is not one is not found before anything else"
    );
}

#[tokio::test]
async fn coordinates_follow_location_permissions_and_tenancy() {
    let f = Fleet::start().await;
    let path = f.device_path("coordinates/");
    let moved = f
        .call(
            "PUT",
            &path,
            Some(&f.operator),
            Some(feature(json!(1.0), json!(2.0))),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "operators place devices");
    assert_eq!(f.get(&path, &f.operator).await.status, StatusCode::OK);
    assert_eq!(f.get(&path, &f.nobody).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        f.call(
            "PUT",
            &path,
            Some(&f.nobody),
            Some(feature(json!(1.0), json!(2.0)))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(f.get(&path, &f.other).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        f.call("GET", &path, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_a_point_in_range_moves_a_device() {
    let f = Fleet::start().await;
    let path = f.device_path("coordinates/");
    for (body, message) in [
        (json!({"type": "Feature"}), "This field is required."),
        (json!({"geometry": "here"}), "This field is required."),
        (
            json!({"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}),
            "Only Point geometries are accepted.",
        ),
        (
            feature(json!(200.0), json!(0.0)),
            "Longitude 200 is out of range (-180 to 180).",
        ),
        (
            feature(json!(0.0), json!(-91.0)),
            "Latitude -91 is out of range (-90 to 90).",
        ),
        (
            json!({"geometry": {"type": "Point", "coordinates": [1.0]}}),
            "Coordinates must be [longitude, latitude].",
        ),
    ] {
        let reply = f
            .call("PUT", &path, Some(&f.admin), Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, json!({"geometry": [message]}), "{body}");
    }
}

// Telemetry.

#[tokio::test]
async fn telemetry_is_shown_to_device_viewers_of_the_tenant_with_its_range_checked() {
    let f = Fleet::start().await;
    let path = f.device_path("telemetry/");
    let empty = f.get(&path, &f.operator).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        empty.body,
        json!({"latest": null, "count": 0, "next": null, "previous": null, "results": []})
    );

    let bad_range = f
        .get(&format!("{path}?since=yesterday&until=soon"), &f.operator)
        .await;
    assert_eq!(bad_range.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_range.body,
        json!({"since": ["Enter a valid date/time."], "until": ["Enter a valid date/time."]})
    );
    assert_eq!(
        f.get(
            &format!("{path}?since={}", fleetmq_store::Timestamp::now()),
            &f.operator
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(f.get(&path, &f.nobody).await.status, StatusCode::FORBIDDEN);
    assert_eq!(f.get(&path, &f.other).await.status, StatusCode::NOT_FOUND);
}

// The npm.system_update proxy.

fn system_update(f: &Fleet, rest: &str) -> String {
    format!("/api/v1/devices/{}/npm.system_update/2.0/{rest}", f.device)
}

const NO_BROKER: &str = "Devices cannot be reached: the MQTT bridge is not running.";

#[tokio::test]
async fn a_device_call_without_a_broker_is_503_for_whoever_may_make_it() {
    let f = Fleet::start().await;
    for (method, rest, token, body) in [
        ("GET", "update", &f.operator, None),
        ("GET", "images/items/3", &f.operator, None),
        ("POST", "update/init", &f.operator, None),
        ("DELETE", "images/items/3", &f.admin, None),
        (
            "POST",
            "images/fetch",
            &f.admin,
            Some(json!({"url": "http://example.com/fw.bin"})),
        ),
    ] {
        let reply = f
            .call(method, &system_update(&f, rest), Some(token), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {rest}"
        );
        assert_eq!(reply.body, json!({"detail": NO_BROKER}), "{method} {rest}");
    }
}

#[tokio::test]
async fn device_calls_follow_device_permissions_and_tenancy_before_the_call_is_read() {
    let f = Fleet::start().await;
    for (method, rest) in [
        ("GET", "update"),
        ("POST", "update/start"),
        ("PUT", "nothing"),
    ] {
        let path = system_update(&f, rest);
        let anonymous = f.call(method, &path, None, None).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {rest}"
        );
        let nobody = f.call(method, &path, Some(&f.nobody), None).await;
        assert_eq!(nobody.status, StatusCode::FORBIDDEN, "{method} {rest}");
        let other = f.call(method, &path, Some(&f.other), None).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{method} {rest}");
    }
    for (method, rest) in [
        ("PUT", "update"),
        ("GET", "update/start"),
        ("GET", "images/items/abc"),
    ] {
        let reply = f
            .call(method, &system_update(&f, rest), Some(&f.admin), None)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {rest}");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
}

#[tokio::test]
async fn an_image_fetch_needs_a_url() {
    let f = Fleet::start().await;
    let path = system_update(&f, "images/fetch");
    for (body, message) in [
        (json!({}), "This field is required."),
        (json!({"url": "  "}), "This field may not be blank."),
        (json!({"url": 5}), "Not a valid string."),
    ] {
        let reply = f.post(&path, &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, json!({"url": [message]}), "{body}");
    }
}

#[test]
fn every_device_call_documents_its_refusals_and_an_unreachable_device() {
    let doc = serde_json::to_value(fleetmq_api::openapi()).expect("a JSON document");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths
        .iter()
        .filter(|(p, _)| p.contains("npm.system_update"))
    {
        let methods = item.as_object().expect("a path item").iter();
        for (method, operation) in methods.filter(|(m, _)| m.as_str() != "parameters") {
            operations += 1;
            assert_eq!(
                operation["security"],
                json!([{"bearer": []}]),
                "{method} {path}"
            );
            for status in ["401", "403", "404", "503", "504"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} documents {status}"
                );
            }
        }
    }
    assert_eq!(operations, 9, "every call of the device API is documented");
}

// Image types.

const IMAGE_TYPES: &str = "/api/v1/firmware-upgrader/image-type/";

#[tokio::test]
async fn image_types_are_listed_to_firmware_viewers_and_managed_by_superusers() {
    let f = Fleet::start().await;
    let listed = f.get(IMAGE_TYPES, &f.operator).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        listed
            .body
            .as_array()
            .expect("a list")
            .iter()
            .any(|t| t["builtin"] == true),
        "the built-in types are listed"
    );
    assert_eq!(
        f.get(IMAGE_TYPES, &f.homeless).await.status,
        StatusCode::OK,
        "image types belong to no organization: a viewer managing none still lists them"
    );
    assert_eq!(
        f.get(IMAGE_TYPES, &f.nobody).await.status,
        StatusCode::FORBIDDEN
    );

    let custom = json!({"name": "acme-custom.bin", "boards": ["Acme Board v1"]});
    for token in [&f.operator, &f.admin] {
        let refused = f.post(IMAGE_TYPES, token, custom.clone()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    let created = f.post(IMAGE_TYPES, &f.root, custom).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        created.body,
        json!({"name": "acme-custom.bin", "label": "acme-custom.bin",
               "boards": ["Acme Board v1"], "builtin": false}),
        "the label defaults to the name"
    );

    let builtin = listed.body[0]["name"].as_str().expect("a name").to_owned();
    let refused = f
        .call(
            "DELETE",
            &format!("{IMAGE_TYPES}{builtin}/"),
            Some(&f.root),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!({"detail": "Built-in image types cannot be deleted."})
    );
    let custom = format!("{IMAGE_TYPES}acme-custom.bin/");
    assert_eq!(
        f.call("DELETE", &custom, Some(&f.admin), None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.call("DELETE", &custom, Some(&f.root), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.call("DELETE", &custom, Some(&f.root), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_image_type_body_is_checked_field_by_field() {
    let f = Fleet::start().await;
    for (body, errors) in [
        (
            json!({}),
            json!({"name": ["This field is required."], "boards": ["This field is required."]}),
        ),
        (
            json!({"name": "no spaces", "boards": "sim-board", "label": "x".repeat(129)}),
            json!({
                "name": ["Use letters, digits and - _ . + only."],
                "boards": ["Expected a list of items but got type \"str\"."],
                "label": ["Ensure this field has no more than 128 characters."]
            }),
        ),
        (
            json!({"name": "", "boards": ["ok", " "]}),
            json!({
                "name": ["This field may not be blank."],
                "boards": ["Each board must be a non-blank string of at most 128 characters."]
            }),
        ),
        (
            json!({"name": "x.bin", "boards": []}),
            json!({"boards": ["This list may not be empty."]}),
        ),
    ] {
        let reply = f.post(IMAGE_TYPES, &f.root, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, errors, "{body}");
    }
}

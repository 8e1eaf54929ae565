//! Handler tests of `/api/v1/connection/credential/` (and its alias
//! `/api/v1/controller/credential/`): who may do what, and the messages of invalid bodies.

mod common;

use axum::http::StatusCode;
use common::TestApi;
use fleetmq_store::Group;
use serde_json::{Value, json};

const CREDENTIALS: &str = "/api/v1/connection/credential/";
const ALIAS: &str = "/api/v1/controller/credential/";
const REQUIRED: &str = "This field is required.";
const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";

fn ssh(name: &str, organization: Value) -> Value {
    json!({"connector": "ssh", "name": name, "organization": organization,
           "params": {"username": "root", "password": "pw"}})
}

#[tokio::test]
async fn operators_have_no_credentials_permission_and_administrators_do() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let administrator = api.user("ada", &[Group::Administrator], &[&acme]).await;
    let existing = api
        .post(CREDENTIALS, &api.admin, ssh("existing", json!(acme)))
        .await
        .str("id");
    let detail = format!("{CREDENTIALS}{existing}/");

    let denied = json!({"detail": PERMISSION_DENIED});
    for (method, path, body) in [
        ("GET", CREDENTIALS, None),
        ("POST", CREDENTIALS, Some(ssh("mine", json!(acme)))),
        ("GET", detail.as_str(), None),
        ("PUT", detail.as_str(), Some(ssh("mine", json!(acme)))),
        ("PATCH", detail.as_str(), Some(json!({"name": "mine"}))),
        ("DELETE", detail.as_str(), None),
    ] {
        let reply = api.call(method, path, Some(&operator), body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(reply.body, denied, "{method} {path}");
    }

    let created = api
        .post(CREDENTIALS, &administrator, ssh("mine", json!(acme)))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["organization"], json!(acme));
    let listed = api.get(CREDENTIALS, &administrator).await;
    assert_eq!(listed.body["count"], 2);
}

#[tokio::test]
async fn another_organizations_credentials_are_not_found() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let manager = api.user("ada", &[Group::Administrator], &[&acme]).await;
    let theirs = api
        .post(CREDENTIALS, &api.admin, ssh("theirs", json!(beta)))
        .await
        .str("id");

    for base in [CREDENTIALS, ALIAS] {
        let path = format!("{base}{theirs}/");
        for (method, body) in [
            ("GET", None),
            ("PUT", Some(ssh("mine", json!(acme)))),
            ("PATCH", Some(json!({"name": "mine"}))),
            ("DELETE", None),
        ] {
            let reply = api.call(method, &path, Some(&manager), body).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(reply.body, json!({"detail": "Not found."}));
        }
    }
    let into_theirs = api
        .post(CREDENTIALS, &manager, ssh("sneaky", json!(beta)))
        .await;
    assert_eq!(into_theirs.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        into_theirs.body,
        json!({"organization": [format!("Invalid pk \"{beta}\" - object does not exist.")]})
    );
    let still = api
        .get(&format!("{CREDENTIALS}{theirs}/"), &api.admin)
        .await;
    assert_eq!(still.body["name"], "theirs", "nothing was changed");
}

#[tokio::test]
async fn shared_credentials_are_made_and_changed_by_superusers_only() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let manager = api.user("ada", &[Group::Administrator], &[&acme]).await;

    let blank_org = api
        .post(CREDENTIALS, &api.admin, ssh("shared", json!("")))
        .await;
    assert_eq!(
        blank_org.status,
        StatusCode::CREATED,
        "{:?}",
        blank_org.body
    );
    assert_eq!(
        blank_org.body["organization"],
        Value::Null,
        "a blank organization is none: shared"
    );
    let shared = format!("{CREDENTIALS}{}/", blank_org.str("id"));

    let null_org = api
        .post(CREDENTIALS, &manager, ssh("mine", Value::Null))
        .await;
    assert_eq!(null_org.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        null_org.body,
        json!({"organization": ["This field may not be null."]})
    );
    assert_eq!(
        api.get(&shared, &manager).await.status,
        StatusCode::OK,
        "managers see shared credentials"
    );
    let denied = json!({"detail": PERMISSION_DENIED});
    let renamed = api.patch(&shared, &manager, json!({"name": "mine"})).await;
    assert_eq!(renamed.status, StatusCode::FORBIDDEN);
    assert_eq!(renamed.body, denied);
    let deleted = api.delete(&shared, &manager).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);

    let own = api
        .post(CREDENTIALS, &manager, ssh("own", json!(acme)))
        .await;
    let unshare = api
        .patch(
            &format!("{CREDENTIALS}{}/", own.str("id")),
            &manager,
            json!({"organization": null}),
        )
        .await;
    assert_eq!(
        unshare.body,
        json!({"organization": ["This field may not be null."]}),
        "a manager cannot make their credentials shared"
    );
    let by_admin = api
        .patch(&shared, &api.admin, json!({"name": "renamed"}))
        .await;
    assert_eq!(by_admin.body["name"], "renamed");
}

#[tokio::test]
async fn invalid_credentials_fields_get_their_own_messages() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;

    let missing = api
        .post(CREDENTIALS, &api.admin, json!({"name": "x"}))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.body,
        json!({"connector": [REQUIRED], "organization": [REQUIRED]})
    );

    let wrong_types = api
        .post(
            CREDENTIALS,
            &api.admin,
            json!({"connector": "telnet", "name": " ", "organization": 7,
                   "auto_add": "yes", "params": []}),
        )
        .await;
    assert_eq!(
        wrong_types.body,
        json!({
            "connector": ["\"telnet\" is not a valid choice."],
            "name": ["This field may not be blank."],
            "organization": ["Incorrect type. Expected pk value, received int."],
            "auto_add": ["Must be a valid boolean."],
            "params": ["Expected a dictionary of items but got type \"list\"."],
        })
    );

    let id = api
        .post(CREDENTIALS, &api.admin, ssh("root", json!(acme)))
        .await
        .str("id");
    let detail = format!("{CREDENTIALS}{id}/");
    let patched = api
        .patch(&detail, &api.admin, json!({"name": ["x"], "auto_add": 2}))
        .await;
    assert_eq!(
        patched.body,
        json!({"name": ["Not a valid string."], "auto_add": ["Must be a valid boolean."]})
    );
    let partial_put = api.put(&detail, &api.admin, json!({"name": "y"})).await;
    assert_eq!(
        partial_put.body,
        json!({"connector": [REQUIRED], "organization": [REQUIRED]}),
        "PUT replaces: required fields must be there"
    );
    let mqtt_params = api
        .patch(&detail, &api.admin, json!({"connector": "mqtt"}))
        .await;
    assert_eq!(
        mqtt_params.body,
        json!({"params": ["The MQTT connector takes no parameters: devices authenticate with their key."]}),
        "parameters are checked against the connector after the change"
    );
    let mqtt = api
        .patch(
            &format!("{ALIAS}{id}/"),
            &api.admin,
            json!({"connector": "mqtt", "params": {}, "auto_add": true}),
        )
        .await;
    assert_eq!(mqtt.status, StatusCode::OK, "{:?}", mqtt.body);
    assert_eq!(
        mqtt.body["connector"],
        "fleetmq.connection.connectors.mqtt.Mqtt"
    );
    assert_eq!(mqtt.body["auto_add"], true);
    assert_eq!(mqtt.body["name"], "root");
}

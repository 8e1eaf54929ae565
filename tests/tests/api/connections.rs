use fleetmq_tests::TestApp;
use serde_json::json;

const CREDENTIALS: &str = "/api/v1/connection/credential/";

#[tokio::test]
async fn ssh_credentials_are_validated_as_openwisp_does() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let ok = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "ssh", "name": "root", "organization": org,
            "params": {"username": "root", "password": "secret", "port": 22}}),
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert_eq!(
        ok.body["connector"],
        "openwisp_controller.connection.connectors.ssh.Ssh"
    );

    for params in [
        json!({"password": "x"}),
        json!({"username": "root"}),
        json!({"username": "root", "password": "x", "extra": 1}),
        json!({"username": "root", "key": "k", "port": 70000}),
    ] {
        let bad = app
            .post(
                CREDENTIALS,
                &app.admin_token,
                json!({"connector": "ssh", "name": "x", "organization": org, "params": params}),
            )
            .await;
        assert_eq!(bad.status, 400, "{params}");
        assert!(bad.body["params"].is_array(), "{:?}", bad.body);
    }
    let bad_connector = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "telnet", "name": "x", "organization": org, "params": {}}),
        )
        .await;
    assert_eq!(
        bad_connector.body["connector"],
        json!(["\"telnet\" is not a valid choice."])
    );

    let alias = app
        .get("/api/v1/controller/credential/", &app.admin_token)
        .await;
    assert_eq!(alias.status, 200, "OpenWISP's real path answers too");
    assert_eq!(alias.body["count"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn credentials_follow_tenancy_and_shared_ones_are_read_only_to_managers() {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let beta = app.create_org("beta").await;
    let admin_a = app.create_user("ada", &["Administrator"], &[&acme]).await;
    let operator = app.create_user("otto", &["Operator"], &[&acme]).await;
    let ssh = json!({"username": "root", "password": "pw"});
    let shared = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "ssh", "name": "shared", "organization": null, "params": ssh}),
        )
        .await;
    assert_eq!(shared.status, 201);
    let theirs = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "ssh", "name": "beta", "organization": beta, "params": ssh}),
        )
        .await;

    let listed = app.get(CREDENTIALS, &admin_a).await;
    assert_eq!(
        listed.body["count"], 1,
        "own organization's and shared credentials only: {:?}",
        listed.body
    );
    assert_eq!(listed.body["results"][0]["name"], "shared");
    assert_eq!(
        app.get(&format!("{CREDENTIALS}{}/", theirs.str("id")), &admin_a)
            .await
            .status,
        404
    );
    let edit_shared = app
        .call(
            "PATCH",
            &format!("{CREDENTIALS}{}/", shared.str("id")),
            Some(&admin_a),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(edit_shared.status, 403);
    let null_org = app
        .post(
            CREDENTIALS,
            &admin_a,
            json!({"connector": "ssh", "name": "x", "organization": null, "params": ssh}),
        )
        .await;
    assert_eq!(
        null_org.body,
        json!({"organization": ["This field may not be null."]})
    );
    assert_eq!(
        app.get(CREDENTIALS, &operator).await.status,
        403,
        "operators have no credentials permission"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn device_connections_use_credentials_of_the_devices_organization() {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let beta = app.create_org("beta").await;
    let ssh = json!({"username": "root", "password": "pw"});
    let own = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "ssh", "name": "own", "organization": acme, "params": ssh}),
        )
        .await
        .str("id");
    let foreign = app
        .post(
            CREDENTIALS,
            &app.admin_token,
            json!({"connector": "ssh", "name": "f", "organization": beta, "params": ssh}),
        )
        .await
        .str("id");
    let plain = app
        .create_device(&app.admin_token, &acme, "plain")
        .await
        .str("id");
    let path = format!("/api/v1/controller/device/{plain}/connection/");
    let own_mqtt = app.get(&path, &app.admin_token).await;
    assert_eq!(
        own_mqtt.body["count"], 1,
        "the device came with its MQTT connection: {:?}",
        own_mqtt.body
    );
    assert_eq!(
        own_mqtt.body["results"][0]["update_strategy"],
        "fleetmq.connection.update_strategies.mqtt"
    );
    let own_mqtt = format!(
        "{path}{}/",
        own_mqtt.body["results"][0]["id"].as_str().expect("its id")
    );
    let off = app
        .call(
            "PATCH",
            &own_mqtt,
            Some(&app.admin_token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(off.body["enabled"], false, "{:?}", off.body);

    let wrong_org = app
        .post(&path, &app.admin_token, json!({"credentials": foreign}))
        .await;
    assert_eq!(wrong_org.status, 400);
    assert!(wrong_org.body["credentials"].is_array());
    let no_strategy = app
        .post(&path, &app.admin_token, json!({"credentials": own}))
        .await;
    assert_eq!(
        no_strategy.status, 400,
        "no config backend to infer the update strategy from"
    );
    assert!(no_strategy.body["update_strategy"].is_array());

    let created = app.post(&path, &app.admin_token, json!({"credentials": own, "update_strategy": "openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt"})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["is_working"], serde_json::Value::Null);
    let twice = app
        .post(
            &path,
            &app.admin_token,
            json!({"credentials": own, "update_strategy": "x"}),
        )
        .await;
    assert_eq!(
        twice.body,
        json!({"non_field_errors": ["The fields device, credentials must make a unique set."]})
    );

    let detail = format!("{path}{}/", created.str("id"));
    let disabled = app
        .call(
            "PATCH",
            &detail,
            Some(&app.admin_token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.body["enabled"], false);
    let commands = format!("/api/v1/controller/device/{plain}/command/");
    let refused = app
        .post(&commands, &app.admin_token, json!({"type": "reboot"}))
        .await;
    assert_eq!(
        refused.body,
        json!({"device": ["Device has no credentials assigned."]}),
        "disabled connections do not count"
    );

    assert_eq!(
        app.call(
            "DELETE",
            &format!("{CREDENTIALS}{own}/"),
            Some(&app.admin_token),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.get(&detail, &app.admin_token).await.status,
        404,
        "connections go with their credentials"
    );
    app.shutdown().await;
}

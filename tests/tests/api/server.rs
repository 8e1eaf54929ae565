use fleetmq_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn data_survives_a_restart() {
    let mut app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let device = app.create_device(&app.admin_token, &org, "keeper").await;
    assert_eq!(device.status, 201);

    app.restart().await;

    let reply = app
        .get(
            &format!("/api/v1/controller/device/{}/", device.str("id")),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        reply.status, 200,
        "the token and the device are still there"
    );
    assert_eq!(reply.body["name"], "keeper");
    assert_eq!(reply.body["key"], device.body["key"]);
    app.shutdown().await;
}

#[tokio::test]
async fn health_reports_store_and_broker_without_authentication() {
    let app = TestApp::spawn().await;
    let reply = app.call("GET", "/healthz", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"status": "ok", "store": "ok", "broker": "ok"})
    );
    app.shutdown().await;
}

/// The value of the series `name` in a Prometheus text exposition.
fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test]
async fn metrics_show_the_store_cache_growing_with_the_data_as_a_gauge() {
    let app = TestApp::spawn().await;
    let before = app.metrics().await;
    assert!(
        before.contains("# TYPE fleetmq_store_cache_bytes gauge\n"),
        "{before}"
    );
    assert!(
        before.contains("# TYPE fleetmq_store_cache_evictions_total counter\n")
            && before.contains("# TYPE fleetmq_uplink_messages_total counter\n"),
        "{before}"
    );
    let org = app.create_org("acme").await;
    for i in 0..40 {
        let device = app
            .create_device(&app.admin_token, &org, &format!("cached-{i}"))
            .await;
        assert_eq!(device.status, 201, "{}", device.body);
    }
    let after = app.metrics().await;
    if app.on_postgres() {
        // PostgreSQL caches in its own server: the gauge stays 0.
        assert_eq!(series(&after, "fleetmq_store_cache_bytes"), 0);
        return app.shutdown().await;
    }
    assert!(
        series(&after, "fleetmq_store_cache_bytes") > series(&before, "fleetmq_store_cache_bytes"),
        "40 devices later the store keeps more in memory:\n{before}\n{after}"
    );
    assert_eq!(series(&after, "fleetmq_store_cache_evictions_total"), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_swagger_ui_is_served() {
    let app = TestApp::spawn().await;
    let doc = app.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let expected = [
        ("/api/v1/controller/device/", &["get", "post"][..]),
        (
            "/api/v1/controller/device/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/device/{id}/activate/", &["post"][..]),
        ("/api/v1/controller/device/{id}/deactivate/", &["post"][..]),
        (
            "/api/v1/controller/device/{id}/configuration/",
            &["get"][..],
        ),
        ("/api/v1/users/token/", &["post"][..]),
        ("/api/v1/users/session/", &["get", "post", "delete"][..]),
        ("/api/v1/events/", &["get"][..]),
        ("/api/v1/users/user/", &["get", "post"][..]),
        (
            "/api/v1/users/user/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/users/organization/", &["get", "post"][..]),
        (
            "/api/v1/users/organization/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/healthz", &["get"][..]),
        ("/metrics", &["get"][..]),
        (
            "/api/v1/controller/device/{id}/coordinates/",
            &["get", "put"][..],
        ),
        ("/api/v1/controller/device/{id}/telemetry/", &["get"][..]),
        ("/api/v1/controller/device/{id}/presence/", &["get"][..]),
        (
            "/api/v1/controller/organization/{id}/config-settings/",
            &["get", "put", "patch"][..],
        ),
        ("/controller/device/register/", &["post"][..]),
        ("/controller/device/update-info/{id}/", &["post"][..]),
        ("/controller/device/checksum/{id}/", &["get"][..]),
        ("/controller/device/download-config/{id}/", &["get"][..]),
        ("/controller/device/report-status/{id}/", &["post"][..]),
        ("/api/v1/controller/template/", &["get", "post"][..]),
        (
            "/api/v1/controller/template/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        (
            "/api/v1/controller/template/{id}/configuration/",
            &["get"][..],
        ),
        ("/api/v1/controller/group/", &["get", "post"][..]),
        (
            "/api/v1/controller/group/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/cert/{common_name}/group/", &["get"][..]),
        ("/api/v1/controller/ca/", &["get", "post"][..]),
        (
            "/api/v1/controller/ca/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/ca/{id}/renew/", &["post"][..]),
        ("/api/v1/controller/ca/{id}/crl/", &["get"][..]),
        ("/api/v1/controller/cert/", &["get", "post"][..]),
        (
            "/api/v1/controller/cert/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/cert/{id}/renew/", &["post"][..]),
        ("/api/v1/controller/cert/{id}/revoke/", &["post"][..]),
        ("/api/v1/controller/device/{id}/certificate/", &["post"][..]),
        ("/api/v1/controller/vpn/", &["get", "post"][..]),
        (
            "/api/v1/controller/vpn/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/vpn/{id}/configuration/", &["get"][..]),
        ("/api/v1/controller/location/", &["get", "post"][..]),
        (
            "/api/v1/controller/location/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/location/{id}/device/", &["get"][..]),
        ("/api/v1/controller/location/geojson/", &["get"][..]),
        ("/api/v1/controller/floorplan/", &["get", "post"][..]),
        (
            "/api/v1/controller/floorplan/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/floorplan/{id}/image/", &["get"][..]),
        (
            "/api/v1/controller/device/{id}/location/",
            &["get", "put", "patch", "delete"][..],
        ),
        (
            "/api/v1/controller/device/{id}/command/",
            &["get", "post"][..],
        ),
        (
            "/api/v1/controller/device/{id}/command/{command_id}/",
            &["get"][..],
        ),
        (
            "/api/v1/controller/device/{id}/connection/",
            &["get", "post"][..],
        ),
        (
            "/api/v1/controller/device/{id}/connection/{connection_id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/connection/credential/", &["get", "post"][..]),
        (
            "/api/v1/connection/credential/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/controller/credential/", &["get", "post"][..]),
        (
            "/api/v1/controller/credential/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/firmware-upgrader/category/", &["get", "post"][..]),
        (
            "/api/v1/firmware-upgrader/category/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/api/v1/firmware-upgrader/build/", &["get", "post"][..]),
        (
            "/api/v1/firmware-upgrader/build/{id}/",
            &["get", "put", "patch", "delete"][..],
        ),
        (
            "/api/v1/firmware-upgrader/build/{id}/image/",
            &["get", "post"][..],
        ),
        (
            "/api/v1/firmware-upgrader/build/{build_id}/image/{id}/",
            &["get", "delete"][..],
        ),
        (
            "/api/v1/firmware-upgrader/build/{build_id}/image/{id}/download/",
            &["get"][..],
        ),
        (
            "/api/v1/firmware-upgrader/build/{id}/upgrade/",
            &["get", "post"][..],
        ),
        (
            "/api/v1/firmware-upgrader/image-type/",
            &["get", "post"][..],
        ),
        (
            "/api/v1/firmware-upgrader/image-type/{name}/",
            &["delete"][..],
        ),
        (
            "/api/v1/firmware-upgrader/device/{device_id}/firmware/",
            &["get", "put", "patch", "delete"][..],
        ),
        (
            "/api/v1/firmware-upgrader/device/{device_id}/upgrade-operation/",
            &["get"][..],
        ),
        ("/api/v1/firmware-upgrader/upgrade-operation/", &["get"][..]),
        (
            "/api/v1/firmware-upgrader/upgrade-operation/{id}/",
            &["get"][..],
        ),
        (
            "/api/v1/firmware-upgrader/upgrade-operation/{id}/cancel/",
            &["post"][..],
        ),
        (
            "/api/v1/firmware-upgrader/batch-upgrade-operation/",
            &["get"][..],
        ),
        (
            "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/",
            &["get"][..],
        ),
        (
            "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/cancel/",
            &["post"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/images",
            &["get"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{item}",
            &["get", "delete"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/images/fetch",
            &["post"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/images/upload",
            &["post"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/update",
            &["get"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/update/init",
            &["post"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/update/reset",
            &["post"][..],
        ),
        (
            "/api/v1/devices/{device_id}/npm.system_update/2.0/update/start",
            &["post"][..],
        ),
        // OAuth 2.0 and the OTAO API.
        ("/api/v1/oauth/token", &["post"][..]),
        ("/api/v1/oauth/clients/", &["get", "post"][..]),
        ("/api/v1/oauth/clients/{id}/", &["get", "delete"][..]),
        ("/api/v1/applications/{appName}", &["get", "put"][..]),
        ("/api/v1/applications/{appName}/software", &["get"][..]),
        (
            "/api/v1/applications/{appName}/software/{version}",
            &["get", "post", "put"][..],
        ),
        ("/api/v1/endpoints/{endpointId}/software", &["get"][..]),
        (
            "/api/v1/endpoints/{endpointId}/software/current",
            &["get"][..],
        ),
        (
            "/api/v1/endpoints/{endpointId}/software/installations",
            &["get"][..],
        ),
        (
            "/api/v1/endpoints/{endpointId}/software/{appName}",
            &["put"][..],
        ),
        ("/api/v1/filters", &["get", "post"][..]),
        ("/api/v1/filters/{filterId}", &["get", "put", "delete"][..]),
        ("/api/v1/filters/{filterId}/endpoints", &["get"][..]),
    ];
    let paths = doc.body["paths"].as_object().expect("paths");
    assert_eq!(
        paths.len(),
        expected.len(),
        "documented: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, methods) in expected {
        for method in methods {
            assert!(
                doc.body["paths"][path.replace("{item}", "{id}")][method].is_object(),
                "{method} {path} is documented"
            );
            // And the route really answers: unauthenticated calls get 401, not the router's
            // own 404/405.
            let concrete = path
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{command_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{build_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{connection_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{device_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{name}", "some-type")
                .replace("{common_name}", "some-common-name")
                .replace("{item}", "3")
                .replace("{appName}", "smart-kettle")
                .replace("{version}", "1.0.2")
                .replace("{endpointId}", &uuid::Uuid::new_v4().to_string())
                .replace("{filterId}", &uuid::Uuid::new_v4().to_string());
            let reply = app
                .call(&method.to_uppercase(), &concrete, None, None)
                .await;
            if path.starts_with("/controller/device/") {
                // The agent protocol authenticates with the device key or the organization's
                // secret, never a token: an unknown device, or a missing parameter.
                assert!(
                    [400, 404].contains(&reply.status),
                    "{method} {path}: {}",
                    reply.status
                );
                continue;
            }
            let expected = match path {
                "/healthz" | "/metrics" => 200,
                "/api/v1/users/token/" => 400,
                // Logging in needs no session: an empty body is a bad request.
                "/api/v1/users/session/" if *method == "post" => 400,
                // Not a form: invalid_request before any client authentication.
                "/api/v1/oauth/token" => 400,
                _ => 401,
            };
            assert_eq!(reply.status, expected, "{method} {path}");
        }
    }
    let schemas = &doc.body["components"]["schemas"];
    assert!(schemas["DeviceView"].is_object());
    // What the console's fleet table and live views are generated from.
    assert!(schemas["DeviceView"]["properties"]["presence"].is_object());
    assert!(schemas["PresenceView"]["properties"]["since"].is_object());
    for event in ["PresenceEvent", "CommandEvent", "BatchEvent"] {
        assert!(schemas[event].is_object(), "{event} is documented");
    }
    let parameters: Vec<&str> =
        doc.body["paths"]["/api/v1/controller/device/"]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
    for name in [
        "search",
        "model",
        "is_online",
        "firmware_version",
        "ordering",
    ] {
        assert!(parameters.contains(&name), "{name} in {parameters:?}");
    }

    let ui = app
        .http
        .get(format!("{}/api/v1/docs/", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(ui.status(), 200);
    assert!(
        ui.text().await.unwrap_or_default().contains("swagger"),
        "Swagger UI page"
    );
    app.shutdown().await;
}

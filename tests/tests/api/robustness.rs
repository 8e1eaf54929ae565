use fleetmq_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_a_400_with_a_message() {
    let app = TestApp::spawn().await;
    let reply = app
        .send_raw(
            "POST",
            "/api/v1/controller/device/",
            &app.admin_token,
            "application/json",
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.str("detail").starts_with("JSON parse error"),
        "{:?}",
        reply.body
    );

    let list = app
        .send_raw(
            "POST",
            "/api/v1/controller/device/",
            &app.admin_token,
            "application/json",
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(list.status, 400);
    assert_eq!(
        list.body,
        json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_of_non_json_whitespace_is_malformed_not_empty() {
    let app = TestApp::spawn().await;
    let org = app.create_org("ws").await;
    let device = app.create_device(&app.admin_token, &org, "ws-1").await;
    assert_eq!(device.status, 201, "{:?}", device.body);
    let path = format!("/api/v1/controller/device/{}/", device.str("id"));
    // A form feed is whitespace to Rust but not to JSON (RFC 8259): a PATCH of it is refused
    // instead of being read as "no change".
    let reply = app
        .send_raw(
            "PATCH",
            &path,
            &app.admin_token,
            "application/json",
            vec![0x0c],
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        reply.str("detail").starts_with("JSON parse error"),
        "{:?}",
        reply.body
    );
    // JSON's own whitespace is an empty body: no change.
    let reply = app
        .send_raw(
            "PATCH",
            &path,
            &app.admin_token,
            "application/json",
            b" \r\n\t".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn wrong_types_are_field_errors() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let reply = app
        .post(
            "/api/v1/controller/device/",
            &app.admin_token,
            json!({"name": ["x"], "organization": 7, "mac_address": {"a": 1}, "config": [1]}),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["name"], json!(["Not a valid string."]));
    assert_eq!(
        reply.body["organization"],
        json!(["Incorrect type. Expected pk value, received int."])
    );
    assert_eq!(reply.body["mac_address"], json!(["Not a valid string."]));
    assert!(reply.body["config"].is_array());
    let _ = org;
    app.shutdown().await;
}

#[tokio::test]
async fn a_ten_mebibyte_body_is_refused_with_413_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let mut body = b"{\"notes\": \"".to_vec();
    body.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    body.extend(b"\"}");
    let reply = app
        .send_raw(
            "POST",
            "/api/v1/controller/device/",
            &app.admin_token,
            "application/json",
            body,
        )
        .await;
    assert_eq!(reply.status, 413);
    assert!(
        reply.str("detail").contains("too large"),
        "{:?}",
        reply.body
    );
    assert_eq!(
        app.get("/api/v1/controller/device/", &app.admin_token)
            .await
            .status,
        200
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415_and_unknown_methods_405() {
    let app = TestApp::spawn().await;
    let reply = app
        .send_raw(
            "POST",
            "/api/v1/controller/device/",
            &app.admin_token,
            "text/plain",
            b"name=x".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 415);
    assert_eq!(
        reply.body,
        json!({"detail": "Unsupported media type \"text/plain\" in request."})
    );

    let reply = app
        .call(
            "DELETE",
            "/api/v1/controller/device/",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(
        reply.body,
        json!({"detail": "Method \"DELETE\" not allowed."})
    );

    let reply = app
        .get("/api/v1/controller/device/not-a-uuid/", &app.admin_token)
        .await;
    assert_eq!(reply.status, 404);
    let reply = app.get("/api/v1/no/such/route/", &app.admin_token).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, json!({"detail": "Not found."}));
    app.shutdown().await;
}

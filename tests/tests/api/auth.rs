use fleetmq_tests::{ADMIN_PASSWORD, TestApp};
use serde_json::json;

#[tokio::test]
async fn requests_without_a_token_are_unauthorized() {
    let app = TestApp::spawn().await;
    let reply = app
        .call("GET", "/api/v1/controller/device/", None, None)
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        json!({"detail": "Authentication credentials were not provided."})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_is_rejected_and_the_token_scheme_is_not_accepted() {
    let app = TestApp::spawn().await;
    let reply = app
        .get(
            "/api/v1/controller/device/",
            "0123456789abcdef0123456789abcdef01234567",
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, json!({"detail": "Invalid token."}));

    let reply = app
        .http
        .get(format!("{}/api/v1/controller/device/", app.base))
        .header("authorization", format!("Token {}", app.admin_token))
        .send()
        .await
        .expect("sent");
    assert_eq!(reply.status(), 401, "only the Bearer scheme is accepted");
    app.shutdown().await;
}

#[tokio::test]
async fn the_first_start_token_lists_an_empty_fleet() {
    let app = TestApp::spawn().await;
    let reply = app
        .get("/api/v1/controller/device/", &app.admin_token)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["count"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn tokens_are_issued_for_right_credentials_only() {
    let app = TestApp::spawn().await;
    let good = app
        .call(
            "POST",
            "/api/v1/users/token/",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(good.status, 200);
    let token = good.str("token");
    assert_eq!(token.len(), 40);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        app.get("/api/v1/users/user/", &token).await.status,
        200,
        "the new token works"
    );

    let bad = app
        .call(
            "POST",
            "/api/v1/users/token/",
            None,
            Some(json!({"username": "admin", "password": "nope-nope"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        json!({"non_field_errors": ["Unable to log in with provided credentials."]})
    );

    let missing = app
        .call(
            "POST",
            "/api/v1/users/token/",
            None,
            Some(json!({"username": "admin"})),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body,
        json!({"password": ["This field is required."]})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_user_can_no_longer_use_their_token() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let token = app.create_user("olga", &["Operator"], &[&org]).await;
    assert_eq!(
        app.get("/api/v1/controller/device/", &token).await.status,
        200
    );

    let users = app.get("/api/v1/users/user/", &app.admin_token).await;
    let olga = users.body["results"]
        .as_array()
        .and_then(|r| r.iter().find(|u| u["username"] == "olga"))
        .map(|u| u["id"].as_str().unwrap_or_default().to_owned())
        .expect("olga is listed");
    let patch = app
        .call(
            "PATCH",
            &format!("/api/v1/users/user/{olga}/"),
            Some(&app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(patch.status, 200);
    assert!(
        patch.body.get("password").is_none(),
        "passwords are never shown"
    );

    let reply = app.get("/api/v1/controller/device/", &token).await;
    assert_eq!(reply.status, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn operators_lack_user_management_and_firmware_style_permissions() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let manager = app.create_user("mia", &["Operator"], &[&org]).await;
    let no_groups = app.create_user("ned", &[], &[&org]).await;

    let reply = app
        .post(
            "/api/v1/users/organization/",
            &manager,
            json!({"name": "new"}),
        )
        .await;
    assert_eq!(reply.status, 403);
    let listed = app.get("/api/v1/users/user/", &manager).await;
    assert_eq!(listed.status, 200);
    let names: Vec<_> = listed.body["results"]
        .as_array()
        .map(|r| r.iter().map(|u| u["username"].clone()).collect())
        .unwrap_or_default();
    assert!(names.contains(&json!("mia")) && names.contains(&json!("ned")));
    assert!(
        !names.contains(&json!("admin")),
        "managers see only members of their organizations"
    );

    let reply = app.get("/api/v1/controller/device/", &no_groups).await;
    assert_eq!(
        reply.status, 403,
        "a manager without the Operator group has no device permission"
    );
    assert_eq!(
        reply.body,
        json!({"detail": "You do not have permission to perform this action."})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn password_guessing_is_throttled_per_address() {
    let app = TestApp::spawn().await;
    let guess = json!({"username": "admin", "password": "wrong-guess"});
    let mut last = None;
    for _ in 0..31 {
        last = Some(
            app.call("POST", "/api/v1/users/token/", None, Some(guess.clone()))
                .await,
        );
    }
    let last = last.expect("31 attempts");
    assert_eq!(last.status, 429, "{:?}", last.body);
    assert!(last.str("detail").starts_with("Request was throttled."));
    // Authenticated API use is unaffected.
    assert_eq!(
        app.get("/api/v1/controller/device/", &app.admin_token)
            .await
            .status,
        200
    );
    app.shutdown().await;
}

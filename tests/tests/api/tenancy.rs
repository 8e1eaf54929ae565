use fleetmq_tests::{TestApp, mac_for};
use serde_json::json;

struct TwoTenants {
    app: TestApp,
    org_a: String,
    org_b: String,
    manager_a: String,
    device_b: String,
}

async fn two_tenants() -> TwoTenants {
    let app = TestApp::spawn().await;
    let org_a = app.create_org("org-a").await;
    let org_b = app.create_org("org-b").await;
    let manager_a = app.create_user("alice", &["Operator"], &[&org_a]).await;
    let device_b = app
        .create_device(&app.admin_token, &org_b, "b-router")
        .await
        .str("id");
    TwoTenants {
        app,
        org_a,
        org_b,
        manager_a,
        device_b,
    }
}

#[tokio::test]
async fn another_organizations_device_is_not_found() {
    let t = two_tenants().await;
    let path = format!("/api/v1/controller/device/{}/", t.device_b);
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let body = (method == "PUT" || method == "PATCH").then(|| json!({"notes": "mine now"}));
        let reply = t.app.call(method, &path, Some(&t.manager_a), body).await;
        assert_eq!(reply.status, 404, "{method} on another tenant's device");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    for action in ["deactivate", "activate"] {
        let reply = t
            .app
            .call(
                "POST",
                &format!("{path}{action}/"),
                Some(&t.manager_a),
                None,
            )
            .await;
        assert_eq!(reply.status, 404, "{action} on another tenant's device");
    }
    let still_there = t.app.get(&path, &t.app.admin_token).await;
    assert_eq!(still_there.body["notes"], "", "nothing was changed");
    t.app.shutdown().await;
}

#[tokio::test]
async fn lists_show_only_managed_organizations() {
    let t = two_tenants().await;
    t.app
        .create_device(&t.manager_a, &t.org_a, "a-router")
        .await;
    let mine = t.app.get("/api/v1/controller/device/", &t.manager_a).await;
    assert_eq!(mine.body["count"], 1);
    assert_eq!(mine.body["results"][0]["organization"], t.org_a.as_str());
    let all = t
        .app
        .get("/api/v1/controller/device/", &t.app.admin_token)
        .await;
    assert_eq!(all.body["count"], 2, "superusers see every organization");

    let orgs = t.app.get("/api/v1/users/organization/", &t.manager_a).await;
    assert_eq!(orgs.body["count"], 1);
    let other = t
        .app
        .get(
            &format!("/api/v1/users/organization/{}/", t.org_b),
            &t.manager_a,
        )
        .await;
    assert_eq!(other.status, 404);

    let filtered = t
        .app
        .get(
            &format!("/api/v1/controller/device/?organization={}", t.org_b),
            &t.manager_a,
        )
        .await;
    assert_eq!(
        filtered.status, 400,
        "filtering on an invisible organization is an invalid choice"
    );
    let by_slug = t
        .app
        .get(
            "/api/v1/controller/device/?organization_slug=org-b",
            &t.manager_a,
        )
        .await;
    assert_eq!(by_slug.body["count"], 0);
    t.app.shutdown().await;
}

#[tokio::test]
async fn creating_into_another_organization_is_a_validation_error() {
    let t = two_tenants().await;
    let reply = t.app.create_device(&t.manager_a, &t.org_b, "sneaky").await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        json!({"organization": [format!("Invalid pk \"{}\" - object does not exist.", t.org_b)]})
    );
    let null_org = t
        .app
        .post(
            "/api/v1/controller/device/",
            &t.manager_a,
            json!({"name": "x", "organization": null, "mac_address": mac_for("x")}),
        )
        .await;
    assert_eq!(null_org.status, 400);
    assert_eq!(
        null_org.body,
        json!({"organization": ["This field may not be null."]})
    );

    // Moving an own device into another tenant is refused the same way.
    let mine = t
        .app
        .create_device(&t.manager_a, &t.org_a, "mine")
        .await
        .str("id");
    let moved = t
        .app
        .call(
            "PATCH",
            &format!("/api/v1/controller/device/{mine}/"),
            Some(&t.manager_a),
            Some(json!({"organization": t.org_b})),
        )
        .await;
    assert_eq!(moved.status, 400);
    let admin_view = t
        .app
        .get(
            &format!("/api/v1/controller/device/?organization={}", t.org_b),
            &t.app.admin_token,
        )
        .await;
    assert_eq!(
        admin_view.body["count"], 1,
        "org B still has only its own device"
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn a_user_who_manages_no_organization_is_forbidden() {
    let t = two_tenants().await;
    let member_only = {
        let reply = t
            .app
            .post(
                "/api/v1/users/user/",
                &t.app.admin_token,
                json!({
                "username": "bob", "password": "secret-password", "groups": ["Operator"],
                "organization_users": [{"organization": t.org_a, "is_admin": false}]}),
            )
            .await;
        assert_eq!(reply.status, 201);
        t.app
            .call(
                "POST",
                "/api/v1/users/token/",
                None,
                Some(json!({"username": "bob", "password": "secret-password"})),
            )
            .await
            .str("token")
    };
    let message = json!({"detail": "User is not a manager of the organization to which the requested resource belongs."});
    let list = t.app.get("/api/v1/controller/device/", &member_only).await;
    assert_eq!(list.status, 403);
    assert_eq!(list.body, message);
    let create = t.app.create_device(&member_only, &t.org_a, "x").await;
    assert_eq!(create.status, 403);
    assert_eq!(create.body, message);
    t.app.shutdown().await;
}

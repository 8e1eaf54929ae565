//! The browser console's session (`/api/v1/users/session/`): a cookie that every API route
//! takes in place of the bearer token, CSRF-checked on every request that changes state,
//! revoked by logout and with its user, and held to the same tenancy as a token.

use fleetmq_tests::{TestApp, mac_for};
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

/// A logged-in browser: its cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

async fn log_in(app: &TestApp, username: &str, forwarded_https: bool) -> Browser {
    let mut request = app
        .http
        .post(format!("{}/api/v1/users/session/", app.base))
        .json(&json!({"username": username, "password": "secret-password"}));
    if forwarded_https {
        request = request.header("X-Forwarded-Proto", "https");
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), 201);
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    let body: Value = response.json().await.expect("JSON");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_owned();
    Browser {
        cookie,
        csrf: body["csrf_token"]
            .as_str()
            .expect("a CSRF token")
            .to_owned(),
        set_cookie,
    }
}

impl Browser {
    /// A request with the session cookie, and the CSRF header when `csrf` is given.
    async fn call(
        &self,
        app: &TestApp,
        method: reqwest::Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let mut request = app
            .http
            .request(method, format!("{}{path}", app.base))
            .header(COOKIE, &self.cookie);
        if let Some(csrf) = csrf {
            request = request.header("X-CSRFToken", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        let set_cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, set_cookie)
    }
}

fn device(org: &str, name: &str) -> Value {
    json!({"name": name, "organization": org, "mac_address": mac_for(name)})
}

#[tokio::test]
async fn a_console_session_acts_only_with_its_csrf_token_and_ends_at_logout() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let orgs = app.two_organizations().await;
    let alice = log_in(&app, "alice", false).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(alice.set_cookie.contains(attribute), "{}", alice.set_cookie);
    }
    assert!(
        !alice.set_cookie.contains("Secure"),
        "plain HTTP: {}",
        alice.set_cookie
    );
    let (status, session, _) = alice
        .call(&app, Method::GET, "/api/v1/users/session/", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["username"], "alice");
    assert_eq!(session["csrf_token"], alice.csrf.as_str());

    // Reading needs no CSRF token, and sees what alice's token sees: org A only.
    let (status, devices, _) = alice
        .call(&app, Method::GET, "/api/v1/controller/device/", None, None)
        .await;
    assert_eq!(status, 200, "{devices}");
    let names: Vec<&str> = devices["results"]
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["dev-a"], "org B's device is not shown");

    // Changing state needs the session's own CSRF token.
    let create = "/api/v1/controller/device/";
    for csrf in [None, Some("0".repeat(64).as_str()), Some("not-a-token")] {
        let (status, body, _) = alice
            .call(
                &app,
                Method::POST,
                create,
                csrf,
                Some(device(&orgs.org_a, "x")),
            )
            .await;
        assert_eq!(status, 403, "{csrf:?}: {body}");
        assert_eq!(
            body["detail"],
            "CSRF Failed: CSRF token missing or incorrect."
        );
    }
    let (status, body, _) = alice
        .call(
            &app,
            Method::POST,
            create,
            Some(&alice.csrf),
            Some(device(&orgs.org_a, "made-in-the-console")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Tenancy holds as for a token: org B is not alice's.
    let (status, body, _) = alice
        .call(
            &app,
            Method::POST,
            create,
            Some(&alice.csrf),
            Some(device(&orgs.org_b, "not-hers")),
        )
        .await;
    assert!(status == 400 || status == 403, "{status}: {body}");

    // Logout needs the CSRF token too, then the cookie is worth nothing.
    let session = "/api/v1/users/session/";
    let (status, _, _) = alice.call(&app, Method::DELETE, session, None, None).await;
    assert_eq!(status, 403);
    let (status, _, cleared) = alice
        .call(&app, Method::DELETE, session, Some(&alice.csrf), None)
        .await;
    assert_eq!(status, 204);
    assert!(
        cleared.is_some_and(|c| c.contains("Max-Age=0")),
        "the cookie is cleared"
    );
    let (status, _, _) = alice
        .call(&app, Method::GET, "/api/v1/controller/device/", None, None)
        .await;
    assert_eq!(status, 401, "a logged-out session is refused");
    // Alice's API token (another login) is not touched by the console's logout.
    let devices = app.get("/api/v1/controller/device/", &orgs.manager_a).await;
    assert_eq!(devices.status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_console_session_ends_with_its_user_and_is_secure_behind_tls() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let org = app.create_org("org-a").await;
    app.create_user("bob", &["Operator"], &[&org]).await;
    let bob = log_in(&app, "bob", true).await;
    assert!(bob.set_cookie.contains("; Secure"), "{}", bob.set_cookie);
    let (status, _, _) = bob
        .call(&app, Method::GET, "/api/v1/users/session/", None, None)
        .await;
    assert_eq!(status, 200);

    let id = app.user_id("bob").await;
    let deactivated = app
        .call(
            "PATCH",
            &format!("/api/v1/users/user/{id}/"),
            Some(&app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(deactivated.status, 200, "{:?}", deactivated.body);
    let (status, _, _) = bob
        .call(&app, Method::GET, "/api/v1/users/session/", None, None)
        .await;
    assert_eq!(status, 401, "a deactivated user's session ends at once");

    // Wrong credentials: the API's error, no cookie.
    let response = app
        .http
        .post(format!("{}/api/v1/users/session/", app.base))
        .json(&json!({"username": "bob", "password": "wrong"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert!(response.headers().get(SET_COOKIE).is_none());
    app.shutdown().await;
}

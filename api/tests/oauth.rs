//! OAuth 2.0 client credentials (RFC 6749 §4.4) for the OTAO API: administrators register
//! clients, clients exchange id and secret for scoped bearer tokens, and deleting a client or
//! its organization revokes those tokens at once.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{RawReply, TestApi};
use fleetmq_store::Group;
use serde_json::{Value, json};

/// Registers a client of `org` with `scopes` as `admin`; returns (client_id, client_secret).
async fn client(api: &TestApi, admin: &str, org: &str, scopes: &[&str]) -> (String, String) {
    let reply = api
        .post(
            "/api/v1/oauth/clients/",
            admin,
            json!({"name": "ci", "organization": org, "scopes": scopes}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    (reply.str("client_id"), reply.str("client_secret"))
}

/// POSTs a form to the token endpoint, with HTTP Basic credentials when given.
async fn token_request(api: &TestApi, basic: Option<(&str, &str)>, form: &str) -> RawReply {
    use base64::Engine;
    let mut request = Request::builder()
        .method("POST")
        .uri("/api/v1/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    api.send(request.body(Body::from(form.to_owned())).expect("request"))
        .await
}

/// An access token of a client of `org` with `scopes`.
async fn access_token(api: &TestApi, admin: &str, org: &str, scopes: &[&str]) -> (String, String) {
    let (id, secret) = client(api, admin, org, scopes).await;
    let reply = token_request(
        api,
        None,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    (
        id,
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_owned(),
    )
}

async fn org_admin(api: &TestApi, name: &str, org: &str) -> String {
    api.user(name, &[Group::Administrator], &[org]).await
}

#[tokio::test]
async fn a_client_gets_a_bearer_token_by_basic_or_form_credentials() {
    let api = TestApi::start().await;
    let org = api.org("acme").await;
    let admin = org_admin(&api, "boss", &org).await;
    let (id, secret) = client(
        &api,
        &admin,
        &org,
        &["application:software:read", "endpoint:read"],
    )
    .await;
    assert_eq!(secret.len(), 64, "a 32-byte secret");

    let reply = token_request(&api, Some((&id, &secret)), "grant_type=client_credentials").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "application:software:read endpoint:read");
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() == 64));

    let reply = token_request(
        &api,
        None,
        &format!(
            "grant_type=client_credentials&scope=endpoint%3Aread&client_id={id}&client_secret={secret}"
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["scope"], "endpoint:read");
}

#[tokio::test]
async fn token_errors_follow_rfc_6749_section_5_2() {
    let api = TestApi::start().await;
    let org = api.org("acme").await;
    let admin = org_admin(&api, "boss", &org).await;
    let (id, secret) = client(&api, &admin, &org, &["endpoint:read"]).await;

    let wrong = token_request(
        &api,
        Some((&id, "not-the-secret")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("www-authenticate").starts_with("Basic"));
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(wrong.json()["error_description"].is_string());

    let anonymous = token_request(&api, None, "grant_type=client_credentials").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"], "invalid_client");

    let grant = token_request(&api, Some((&id, &secret)), "grant_type=password").await;
    assert_eq!(grant.status, StatusCode::BAD_REQUEST);
    assert_eq!(grant.json()["error"], "unsupported_grant_type");

    let missing = token_request(&api, Some((&id, &secret)), "scope=endpoint%3Aread").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"], "invalid_request");

    let scope = token_request(
        &api,
        Some((&id, &secret)),
        "grant_type=client_credentials&scope=application%3Asoftware%3Aupdate",
    )
    .await;
    assert_eq!(scope.status, StatusCode::BAD_REQUEST);
    assert_eq!(scope.json()["error"], "invalid_scope");

    let both = token_request(
        &api,
        Some((&id, &secret)),
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
    )
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.json()["error"], "invalid_request");
}

#[tokio::test]
async fn only_administrators_of_the_organization_manage_its_clients() {
    let api = TestApi::start().await;
    let org = api.org("acme").await;
    let other = api.org("rival").await;
    let admin = org_admin(&api, "boss", &org).await;
    let rival = org_admin(&api, "rival-boss", &other).await;
    let operator = api.user("op", &[Group::Operator], &[&org]).await;
    let (id, _) = client(&api, &admin, &org, &["endpoint:read"]).await;

    let listed = api.get("/api/v1/oauth/clients/", &admin).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["count"], 1);
    let shown = &listed.body["results"][0];
    assert_eq!(shown["client_id"], id.as_str());
    assert_eq!(shown["scopes"], json!(["endpoint:read"]));
    assert!(
        shown.get("client_secret").is_none(),
        "the secret is shown once"
    );

    let path = format!("/api/v1/oauth/clients/{id}/");
    assert_eq!(api.get(&path, &admin).await.status, StatusCode::OK);
    assert_eq!(api.get(&path, &api.admin).await.status, StatusCode::OK);
    assert_eq!(api.get(&path, &rival).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.delete(&path, &rival).await.status,
        StatusCode::NOT_FOUND
    );
    let refused = api.get("/api/v1/oauth/clients/", &operator).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body["detail"].is_string(), "DRF bodies here");

    let foreign = api
        .post(
            "/api/v1/oauth/clients/",
            &admin,
            json!({"name": "x", "organization": other, "scopes": ["endpoint:read"]}),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert!(foreign.body["organization"].is_array());
    let bad_scope = api
        .post(
            "/api/v1/oauth/clients/",
            &admin,
            json!({"name": "x", "scopes": ["everything"]}),
        )
        .await;
    assert_eq!(bad_scope.status, StatusCode::BAD_REQUEST);
    assert!(bad_scope.body["scopes"].is_array());
    // One organization administered: it need not be named.
    let implied = api
        .post(
            "/api/v1/oauth/clients/",
            &admin,
            json!({"name": "y", "scopes": ["endpoint:read"]}),
        )
        .await;
    assert_eq!(implied.status, StatusCode::CREATED);
    assert_eq!(implied.body["organization"], org.as_str());
}

/// A route every valid OTAO caller reaches without the software store: an unknown endpoint
/// is a 404, a revoked token a 401.
fn probe() -> String {
    format!("/api/v1/endpoints/{}/software", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn deleting_a_client_revokes_its_tokens_at_once() {
    let api = TestApi::start().await;
    let org = api.org("acme").await;
    let admin = org_admin(&api, "boss", &org).await;
    let (id, token) = access_token(&api, &admin, &org, &["endpoint:read"]).await;
    let before = api.get(&probe(), &token).await;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "{:?}", before.body);

    let deleted = api
        .delete(&format!("/api/v1/oauth/clients/{id}/"), &admin)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let after = api.get(&probe(), &token).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body, json!({"message": "Invalid token."}));
}

#[tokio::test]
async fn deleting_the_organization_revokes_its_clients_tokens_at_once() {
    let api = TestApi::start().await;
    let org = api.org("acme").await;
    let admin = org_admin(&api, "boss", &org).await;
    let (_, token) = access_token(&api, &admin, &org, &["endpoint:read"]).await;
    assert_eq!(
        api.get(&probe(), &token).await.status,
        StatusCode::NOT_FOUND
    );

    let deleted = api
        .delete(&format!("/api/v1/users/organization/{org}/"), &api.admin)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let after = api.get(&probe(), &token).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body["message"], Value::from("Invalid token."));
}

#[tokio::test]
async fn an_expired_token_stops_working() {
    let api = TestApi::start_with(fleetmq_api::ApiConfig {
        // Long enough that a loaded machine still probes it alive first.
        oauth_token_lifetime: 3,
        ..fleetmq_api::ApiConfig::default()
    })
    .await;
    let org = api.org("acme").await;
    let admin = org_admin(&api, "boss", &org).await;
    let (id, secret) = client(&api, &admin, &org, &["endpoint:read"]).await;
    let reply = token_request(&api, Some((&id, &secret)), "grant_type=client_credentials").await;
    assert_eq!(reply.json()["expires_in"], 3);
    let token = reply.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        api.get(&probe(), &token).await.status,
        StatusCode::NOT_FOUND
    );
    // Expiry is the store's clock: poll (bounded) until it passes, no fixed sleep.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if api.get(&probe(), &token).await.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

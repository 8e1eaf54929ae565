//! The OTAO routes (seed otao-api-v1 and fleetmq's extensions): the seed's shapes, the
//! `{"message"}` error shape, scopes, tenancy (another organization's objects are 404s), the
//! specification of a published version never changing, and the decision hook after writes.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Reply, TestApi};
use fleetmq_api::{ApiConfig, Hooks};
use fleetmq_store::{Group, OrgId};
use serde_json::{Value, json};

/// Records the organizations whose software changed.
#[derive(Default)]
struct Recorder(Mutex<Vec<OrgId>>);

impl Hooks for Recorder {
    fn software_changed(&self, org: OrgId) {
        self.0.lock().expect("recorder").push(org);
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("recorder"))
            .into_iter()
            .map(|o| o.0.to_string())
            .collect()
    }
}

const BODY_LIMIT: usize = 16 * 1024;

/// Two organizations, an administrator of each, and the hooks.
struct World {
    api: TestApi,
    hooks: Arc<Recorder>,
    org: String,
    other: String,
    admin: String,
    rival: String,
}

impl World {
    async fn new() -> World {
        let hooks = Arc::new(Recorder::default());
        let api = TestApi::start_with_hooks(
            ApiConfig {
                json_body_limit: BODY_LIMIT,
                ..ApiConfig::default()
            },
            hooks.clone(),
        )
        .await;
        let org = api.org("acme").await;
        let other = api.org("rival").await;
        let admin = api.user("boss", &[Group::Administrator], &[&org]).await;
        let rival = api
            .user("rival-boss", &[Group::Administrator], &[&other])
            .await;
        World {
            api,
            hooks,
            org,
            other,
            admin,
            rival,
        }
    }

    /// An access token of a new client of `org` (registered by `admin`) with `scopes`.
    async fn oauth(&self, admin: &str, org: &str, scopes: &[&str]) -> String {
        let client = self
            .api
            .post(
                "/api/v1/oauth/clients/",
                admin,
                json!({"name": "c", "organization": org, "scopes": scopes}),
            )
            .await;
        assert_eq!(client.status, StatusCode::CREATED, "{:?}", client.body);
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            client.str("client_id"),
            client.str("client_secret")
        );
        let reply = self
            .api
            .send(
                Request::builder()
                    .method("POST")
                    .uri("/api/v1/oauth/token")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(form))
                    .expect("request"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// A token with every scope, of `org`'s client.
    async fn full(&self) -> String {
        self.oauth(
            &self.admin,
            &self.org,
            &[
                "application:software:read",
                "application:software:update",
                "endpoint:read",
                "endpoint:update",
            ],
        )
        .await
    }

    async fn filter(&self, token: &str, name: &str, query: Value) -> String {
        let mut body = query;
        body["name"] = json!(name);
        let reply = self.api.post("/api/v1/filters", token, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.str("filterId")
    }

    async fn model_device(&self, org: &str, name: &str, model: &str) -> String {
        let id = self.api.device(org, name).await;
        let reply = self
            .api
            .patch(
                &format!("/api/v1/controller/device/{id}/"),
                &self.api.admin,
                json!({"model": model}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        id
    }
}

/// A whole second `days` before now as the seed writes it (with milliseconds, as its example)
/// and as the API answers it (without).
fn days_ago(days: i64) -> (String, String) {
    let now = fleetmq_store::Timestamp::now().as_micros() / 1_000_000;
    let text = fleetmq_store::Timestamp::from_micros((now - days * 86_400) * 1_000_000).to_string();
    (format!("{}.848Z", &text[..19]), format!("{}Z", &text[..19]))
}

/// The seed's first example, naming two filters of ours, with rollout dates in the past.
fn seed_software(kettles: &str, lamps: &str) -> Value {
    json!({
        "specification": {"link": "ftp://software-repository"},
        "metadata": "Ubuntu 17.10",
        "upgradableFrom": ["1.0.0", "1.0.1"],
        "rolloutStrategy": "targeted",
        "filters": [
            {"filterId": kettles, "rolloutDate": days_ago(60).0},
            {"filterId": lamps, "rolloutDate": days_ago(30).0}
        ]
    })
}

/// Asserts an OTAO error: the status and a body that is exactly `{"message": text}`.
fn assert_message(reply: &Reply, status: StatusCode) -> String {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let object = reply.body.as_object().expect("an object body");
    assert_eq!(object.len(), 1, "only a message: {:?}", reply.body);
    object["message"].as_str().expect("a message").to_owned()
}

#[tokio::test]
async fn software_is_published_read_and_updated_in_the_seeds_shapes() {
    let w = World::new().await;
    let token = w.full().await;
    let kettles = w
        .filter(&token, "kettles", json!({"model": "kettle"}))
        .await;
    let lamps = w.filter(&token, "lamps", json!({"model": "lamp"})).await;
    w.hooks.take();

    let created = w
        .api
        .send(
            Request::builder()
                .method("POST")
                .uri("/api/v1/applications/smart-kettle/software/1.0.2")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .header("host", "fleet.example.com")
                .body(Body::from(seed_software(&kettles, &lamps).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header("location"),
        "http://fleet.example.com/api/v1/applications/smart-kettle/software/1.0.2"
    );
    assert_eq!(w.hooks.take(), vec![w.org.clone()]);

    let general = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.2.3",
            &token,
            json!({
                "appName": "smart-kettle", "version": "1.2.3",
                "specification": {"link": "ftp://software-repository"},
                "metadata": "Ubuntu 16.04", "upgradableFrom": ["1.2.2"],
                "rolloutStrategy": "general", "filters": []
            }),
        )
        .await;
    assert_eq!(general.status, StatusCode::CREATED, "{:?}", general.body);

    let expected_first = json!({
        "appName": "smart-kettle",
        "version": "1.0.2",
        "specification": {"link": "ftp://software-repository"},
        "metadata": "Ubuntu 17.10",
        "upgradableFrom": ["1.0.0", "1.0.1"],
        "rolloutStrategy": "targeted",
        "filters": [
            {"filterId": kettles, "rolloutDate": days_ago(60).1},
            {"filterId": lamps, "rolloutDate": days_ago(30).1}
        ]
    });
    let one = w
        .api
        .get("/api/v1/applications/smart-kettle/software/1.0.2", &token)
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, expected_first);

    let list = w
        .api
        .get("/api/v1/applications/smart-kettle/software", &token)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.body,
        json!([expected_first, {
            "appName": "smart-kettle", "version": "1.2.3",
            "specification": {"link": "ftp://software-repository"},
            "metadata": "Ubuntu 16.04", "upgradableFrom": ["1.2.2"],
            "rolloutStrategy": "general", "filters": []
        }])
    );

    // PUT replaces what the seed allows, with the rollout extension; the specification stays.
    let put = w
        .api
        .put(
            "/api/v1/applications/smart-kettle/software/1.0.2",
            &token,
            json!({
                "metadata": "Ubuntu 18.04",
                "upgradableFrom": ["1.0.0"],
                "rolloutStrategy": "suspended",
                "rollout": {"maxParallel": 5, "abortThreshold": {"failureRate": 0.5, "minSample": 10}}
            }),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    assert_eq!(w.hooks.take().len(), 2, "one per write");
    let after = w
        .api
        .get("/api/v1/applications/smart-kettle/software/1.0.2", &token)
        .await;
    assert_eq!(
        after.body,
        json!({
            "appName": "smart-kettle", "version": "1.0.2",
            "specification": {"link": "ftp://software-repository"},
            "metadata": "Ubuntu 18.04", "upgradableFrom": ["1.0.0"],
            "rolloutStrategy": "suspended", "filters": [],
            "rollout": {"maxParallel": 5, "abortThreshold": {"failureRate": 0.5, "minSample": 10}}
        })
    );

    let changed = w
        .api
        .put(
            "/api/v1/applications/smart-kettle/software/1.0.2",
            &token,
            json!({"specification": {"link": "ftp://elsewhere"}, "rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(
        assert_message(&changed, StatusCode::BAD_REQUEST),
        "The specification of a published version cannot change."
    );
    let same = w
        .api
        .put(
            "/api/v1/applications/smart-kettle/software/1.0.2",
            &token,
            json!({"specification": {"link": "ftp://software-repository"}, "rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(same.status, StatusCode::NO_CONTENT);
    let kept = w
        .api
        .get("/api/v1/applications/smart-kettle/software/1.0.2", &token)
        .await;
    assert_eq!(
        kept.body["specification"],
        json!({"link": "ftp://software-repository"})
    );
    assert!(w.hooks.take().iter().all(|o| *o == w.org));
}

#[tokio::test]
async fn every_error_is_a_message() {
    let w = World::new().await;
    let token = w.full().await;
    let path = "/api/v1/applications/smart-kettle/software/1.0.0";
    let post = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request")
    };
    let malformed = w.api.send(post("{\"rolloutStrategy\": ")).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json().as_object().map(|o| o.len()), Some(1));
    assert!(malformed.json()["message"].is_string());

    let cases = [
        json!({"rolloutStrategy": 5}),
        json!({"rolloutStrategy": "sometimes"}),
        json!({"metadata": 1}),
        json!({"rolloutStrategy": "general", "colour": "red"}),
        json!({"rolloutStrategy": "general", "upgradableFrom": ["one"]}),
        json!({"rolloutStrategy": "targeted", "filters": []}),
        json!({"rolloutStrategy": "general", "version": "2.0.0"}),
        json!({"rolloutStrategy": "general", "rollout": {"waves": [50, 100]}}),
        json!({"rolloutStrategy": "general", "rollout": {"maxParallel": 0}}),
        json!({"rolloutStrategy": "targeted", "filters": [{"filterId": uuid::Uuid::new_v4().to_string()}]}),
        json!({"rolloutStrategy": "general", "filters": [{"filterId": "x", "rolloutDate": "soon"}]}),
    ];
    for body in cases {
        let reply = w.api.post(path, &token, body.clone()).await;
        assert_message(&reply, StatusCode::BAD_REQUEST);
        assert!(w.hooks.take().is_empty(), "{body} changed nothing");
    }
    let not_semver = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/latest",
            &token,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_message(&not_semver, StatusCode::BAD_REQUEST);

    let huge = json!({"rolloutStrategy": "general", "metadata": "x".repeat(BODY_LIMIT)});
    let too_large = w.api.post(path, &token, huge).await;
    assert_message(&too_large, StatusCode::PAYLOAD_TOO_LARGE);

    let anonymous = w.api.call("GET", path, None, None).await;
    assert_message(&anonymous, StatusCode::UNAUTHORIZED);
    let bad_token = w.api.get(path, "not-a-token").await;
    assert_message(&bad_token, StatusCode::UNAUTHORIZED);
    let missing = w
        .api
        .get("/api/v1/applications/no-such-app/software", &token)
        .await;
    assert_message(&missing, StatusCode::NOT_FOUND);
    let no_version = w.api.get(path, &token).await;
    assert_message(&no_version, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_missing_scope_is_a_403_naming_it() {
    let w = World::new().await;
    let full = w.full().await;
    let created = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.0.0",
            &full,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    let reader = w
        .oauth(&w.admin, &w.org, &["application:software:read"])
        .await;
    let path = "/api/v1/applications/smart-kettle/software/1.0.0";
    assert_eq!(w.api.get(path, &reader).await.status, StatusCode::OK);
    let post = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.1.0",
            &reader,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert!(assert_message(&post, StatusCode::FORBIDDEN).contains("application:software:update"));
    let put = w
        .api
        .put(path, &reader, json!({"rolloutStrategy": "suspended"}))
        .await;
    assert!(assert_message(&put, StatusCode::FORBIDDEN).contains("application:software:update"));

    let endpoints_only = w.oauth(&w.admin, &w.org, &["endpoint:read"]).await;
    let list = w
        .api
        .get(
            "/api/v1/applications/smart-kettle/software",
            &endpoints_only,
        )
        .await;
    assert!(assert_message(&list, StatusCode::FORBIDDEN).contains("application:software:read"));
    let device = w.api.device(&w.org, "d1").await;
    let set = w
        .api
        .put(
            &format!("/api/v1/endpoints/{device}/software/smart-kettle"),
            &endpoints_only,
            json!({"version": "1.0.0"}),
        )
        .await;
    assert!(assert_message(&set, StatusCode::FORBIDDEN).contains("endpoint:update"));
}

#[tokio::test]
async fn another_organizations_objects_are_not_found_for_clients_and_users() {
    let w = World::new().await;
    let rival_token = w
        .oauth(
            &w.rival,
            &w.other,
            &[
                "application:software:read",
                "application:software:update",
                "endpoint:read",
            ],
        )
        .await;
    let created = w
        .api
        .post(
            "/api/v1/applications/secret-app/software/1.0.0",
            &rival_token,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let rival_filter = w.filter(&rival_token, "theirs", json!({})).await;
    let rival_device = w.api.device(&w.other, "their-device").await;

    let ours = w.full().await;
    for caller in [&ours, &w.admin] {
        for path in [
            "/api/v1/applications/secret-app/software".to_owned(),
            "/api/v1/applications/secret-app/software/1.0.0".to_owned(),
            "/api/v1/applications/secret-app".to_owned(),
            format!("/api/v1/endpoints/{rival_device}/software"),
            format!("/api/v1/endpoints/{rival_device}/software/current"),
            format!("/api/v1/endpoints/{rival_device}/software/installations"),
            format!("/api/v1/filters/{rival_filter}"),
            format!("/api/v1/filters/{rival_filter}/endpoints"),
        ] {
            let reply = w.api.get(&path, caller).await;
            assert_message(&reply, StatusCode::NOT_FOUND);
        }
        let put = w
            .api
            .put(
                &format!("/api/v1/filters/{rival_filter}"),
                caller,
                json!({"name": "mine now"}),
            )
            .await;
        assert_message(&put, StatusCode::NOT_FOUND);
        let delete = w
            .api
            .delete(&format!("/api/v1/filters/{rival_filter}"), caller)
            .await;
        assert_message(&delete, StatusCode::NOT_FOUND);
    }
    // Our own listing does not show theirs.
    let filters = w.api.get("/api/v1/filters", &ours).await;
    assert_eq!(filters.body["count"], 0);
    // Publishing the same name in our organization is another application.
    let ours_too = w
        .api
        .post(
            "/api/v1/applications/secret-app/software/1.0.0",
            &ours,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(ours_too.status, StatusCode::CREATED, "{:?}", ours_too.body);
}

#[tokio::test]
async fn users_read_as_operators_and_write_as_administrators() {
    let w = World::new().await;
    let operator = w.api.user("op", &[Group::Operator], &[&w.org]).await;
    let created = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.0.0",
            &w.admin,
            json!({"rolloutStrategy": "general", "specification": {"url": "x"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let path = "/api/v1/applications/smart-kettle/software/1.0.0";
    assert_eq!(w.api.get(path, &operator).await.status, StatusCode::OK);
    let put = w
        .api
        .put(path, &operator, json!({"rolloutStrategy": "suspended"}))
        .await;
    assert_message(&put, StatusCode::FORBIDDEN);

    // A user of two organizations that both have the application must choose.
    let both = w
        .api
        .user("both", &[Group::Administrator], &[&w.org, &w.other])
        .await;
    let theirs = w
        .api
        .post(
            &format!("{path}?organization={}", w.other),
            &both,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{:?}", theirs.body);
    let ambiguous = w.api.get(path, &both).await;
    assert!(assert_message(&ambiguous, StatusCode::BAD_REQUEST).contains("organization"));
    let chosen = w
        .api
        .get(&format!("{path}?organization={}", w.org), &both)
        .await;
    assert_eq!(chosen.status, StatusCode::OK);
    assert_eq!(chosen.body["specification"], json!({"url": "x"}));
    let new_app = w
        .api
        .post(
            "/api/v1/applications/fresh/software/1.0.0",
            &both,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_message(&new_app, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_endpoints_current_software_is_the_catalogue_version_it_runs() {
    let w = World::new().await;
    let token = w.full().await;
    let device = w.api.device(&w.org, "kettle-1").await;
    let current = format!("/api/v1/endpoints/{device}/software/current");
    assert_message(&w.api.get(&current, &token).await, StatusCode::NOT_FOUND);

    let created = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.0.2",
            &token,
            json!({"rolloutStrategy": "general", "specification": {"link": "ftp://x"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    w.hooks.take();
    let set = w
        .api
        .put(
            &format!("/api/v1/endpoints/{device}/software/smart-kettle"),
            &token,
            json!({"version": "1.0.2"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    assert_eq!(w.hooks.take(), vec![w.org.clone()]);

    let reply = w.api.get(&current, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["appName"], "smart-kettle");
    assert_eq!(reply.body["version"], "1.0.2");
    assert_eq!(reply.body["specification"], json!({"link": "ftp://x"}));

    let set = w
        .api
        .put(
            &format!("/api/v1/endpoints/{device}/software/toaster"),
            &token,
            json!({"version": "0.1.0"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK);
    let listed = w
        .api
        .get(&format!("/api/v1/endpoints/{device}/software"), &token)
        .await;
    assert_eq!(
        listed.body,
        json!([
            {"appName": "smart-kettle", "version": "1.0.2"},
            {"appName": "toaster", "version": "0.1.0"}
        ])
    );
    let several = w.api.get(&current, &token).await;
    let message = assert_message(&several, StatusCode::BAD_REQUEST);
    assert!(message.contains("smart-kettle") && message.contains("toaster"));
    let chosen = w
        .api
        .get(&format!("{current}?appName=smart-kettle"), &token)
        .await;
    assert_eq!(chosen.body["version"], "1.0.2");
    // A version the catalogue does not hold.
    let unknown = w
        .api
        .get(&format!("{current}?appName=toaster"), &token)
        .await;
    assert_message(&unknown, StatusCode::NOT_FOUND);

    let installations = w
        .api
        .get(
            &format!("/api/v1/endpoints/{device}/software/installations"),
            &token,
        )
        .await;
    assert_eq!(installations.status, StatusCode::OK);
    assert_eq!(installations.body, json!([]));
}

#[tokio::test]
async fn filters_are_managed_and_list_their_endpoints_in_pages() {
    let w = World::new().await;
    let token = w.full().await;
    for n in 0..3 {
        w.model_device(&w.org, &format!("kettle-{n}"), "kettle")
            .await;
    }
    w.model_device(&w.org, "lamp-0", "lamp").await;
    w.hooks.take();

    let created = w
        .api
        .post(
            "/api/v1/filters",
            &token,
            json!({"name": "kettles", "model": "kettle", "metadata": {}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(w.hooks.take(), vec![w.org.clone()]);
    let id = created.str("filterId");

    // An organization given but empty, or not one that exists, is a bad request (the
    // superuser's scope holds every organization, not unknown ones).
    let empty = w
        .api
        .get("/api/v1/filters?organization=", &w.api.admin)
        .await;
    assert_message(&empty, StatusCode::BAD_REQUEST);
    let unknown = w
        .api
        .post(
            &format!("/api/v1/filters?organization={}", uuid::Uuid::new_v4()),
            &w.api.admin,
            json!({"name": "nowhere"}),
        )
        .await;
    let message = assert_message(&unknown, StatusCode::BAD_REQUEST);
    assert!(
        message.contains("not one of the caller's organizations"),
        "{message}"
    );
    assert_eq!(
        created.body,
        json!({
            "filterId": id, "name": "kettles", "organization": w.org,
            "group": null, "location": null, "model": "kettle", "os": null,
            "hardwareId": null, "metadata": {}, "devices": []
        })
    );

    let page = w
        .api
        .get(
            &format!("/api/v1/filters/{id}/endpoints?page_size=2"),
            &token,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(page.body["count"], 3);
    assert_eq!(page.body["results"].as_array().map(Vec::len), Some(2));
    assert!(
        page.body["next"]
            .as_str()
            .is_some_and(|n| n.contains("page=2"))
    );
    let first = &page.body["results"][0];
    for field in ["id", "name", "organization", "model", "os", "hardware_id"] {
        assert!(first.get(field).is_some(), "{field} listed");
    }
    assert_eq!(first["model"], "kettle");
    let last = w
        .api
        .get(
            &format!("/api/v1/filters/{id}/endpoints?page_size=2&page=2"),
            &token,
        )
        .await;
    assert_eq!(last.body["results"].as_array().map(Vec::len), Some(1));
    let past = w
        .api
        .get(
            &format!("/api/v1/filters/{id}/endpoints?page_size=2&page=3"),
            &token,
        )
        .await;
    assert_message(&past, StatusCode::NOT_FOUND);

    let replaced = w
        .api
        .put(
            &format!("/api/v1/filters/{id}"),
            &token,
            json!({"name": "lamps", "model": "lamp"}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["model"], "lamp");
    let lamps = w
        .api
        .get(&format!("/api/v1/filters/{id}/endpoints"), &token)
        .await;
    assert_eq!(lamps.body["count"], 1);

    // References must be the organization's own.
    let their_device = w.api.device(&w.other, "theirs").await;
    let foreign = w
        .api
        .post(
            "/api/v1/filters",
            &token,
            json!({"name": "x", "devices": [their_device]}),
        )
        .await;
    assert_message(&foreign, StatusCode::BAD_REQUEST);
    let no_group = w
        .api
        .post(
            "/api/v1/filters",
            &token,
            json!({"name": "x", "group": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_message(&no_group, StatusCode::BAD_REQUEST);
    let listed = w.api.get("/api/v1/filters", &token).await;
    assert_eq!(listed.body["count"], 1);

    // A filter a version names cannot go.
    let targeted = w
        .api
        .post(
            "/api/v1/applications/lamp-app/software/1.0.0",
            &token,
            json!({"rolloutStrategy": "targeted", "filters": [{"filterId": id}]}),
        )
        .await;
    assert_eq!(targeted.status, StatusCode::CREATED, "{:?}", targeted.body);
    let in_use = w.api.delete(&format!("/api/v1/filters/{id}"), &token).await;
    assert_message(&in_use, StatusCode::BAD_REQUEST);
    let untargeted = w
        .api
        .put(
            "/api/v1/applications/lamp-app/software/1.0.0",
            &token,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(untargeted.status, StatusCode::NO_CONTENT);

    w.hooks.take();
    let deleted = w.api.delete(&format!("/api/v1/filters/{id}"), &token).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(w.hooks.take(), vec![w.org.clone()]);
    let gone = w.api.get(&format!("/api/v1/filters/{id}"), &token).await;
    assert_message(&gone, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_applications_consent_setting_is_read_and_replaced() {
    let w = World::new().await;
    let token = w.full().await;
    let created = w
        .api
        .post(
            "/api/v1/applications/smart-kettle/software/1.0.0",
            &token,
            json!({"rolloutStrategy": "general"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let path = "/api/v1/applications/smart-kettle";
    let before = w.api.get(path, &token).await;
    assert_eq!(
        before.body,
        json!({"appName": "smart-kettle", "consentRequired": false})
    );
    w.hooks.take();
    let put = w
        .api
        .put(
            path,
            &token,
            json!({"appName": "smart-kettle", "consentRequired": true}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(w.hooks.take(), vec![w.org.clone()]);
    let after = w.api.get(path, &token).await;
    assert_eq!(after.body["consentRequired"], true);
    let wrong = w
        .api
        .put(path, &token, json!({"consentRequired": "yes"}))
        .await;
    assert_message(&wrong, StatusCode::BAD_REQUEST);
}

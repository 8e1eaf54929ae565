//! Handler tests of `/api/v1/firmware-upgrader/category/` and `/api/v1/firmware-upgrader/build/`:
//! who may do what, shared categories, and the category list's organization filter.

mod common;

use axum::http::StatusCode;
use common::TestApi;
use fleetmq_store::Group;
use serde_json::{Value, json};

const CATEGORIES: &str = "/api/v1/firmware-upgrader/category/";
const BUILDS: &str = "/api/v1/firmware-upgrader/build/";
const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";

/// Creates a category named `name` of `org` (`None`: shared) as the superuser; returns its id.
async fn category(api: &TestApi, name: &str, org: Option<&str>) -> String {
    let reply = api
        .post(
            CATEGORIES,
            &api.admin,
            json!({"name": name, "organization": org}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.str("id")
}

/// The names of a list answer's results, sorted.
fn names(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_operator_sees_builds_but_creates_none_and_sees_no_categories() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let routers = category(&api, "routers", Some(&acme)).await;
    let built = api
        .post(
            BUILDS,
            &api.admin,
            json!({"category": routers, "version": "1.0.0"}),
        )
        .await;
    assert_eq!(built.status, StatusCode::CREATED, "{:?}", built.body);
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let denied = json!({"detail": PERMISSION_DENIED});

    let builds = api.get(BUILDS, &operator).await;
    assert_eq!(builds.status, StatusCode::OK, "{:?}", builds.body);
    assert_eq!(builds.body["count"], 1);
    assert_eq!(builds.body["results"][0]["version"], "1.0.0");
    let one = api
        .get(&format!("{BUILDS}{}/", built.str("id")), &operator)
        .await;
    assert_eq!(one.status, StatusCode::OK, "{:?}", one.body);
    assert_eq!(one.body["category"], routers.as_str());

    let created = api
        .post(
            BUILDS,
            &operator,
            json!({"category": routers, "version": "2.0.0"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    assert_eq!(created.body, denied);
    assert_eq!(
        api.get(BUILDS, &api.admin).await.body["count"],
        1,
        "no build was created"
    );

    let categories = api.get(CATEGORIES, &operator).await;
    assert_eq!(categories.status, StatusCode::FORBIDDEN);
    assert_eq!(categories.body, denied);
    let one = api.get(&format!("{CATEGORIES}{routers}/"), &operator).await;
    assert_eq!(one.status, StatusCode::FORBIDDEN);
    assert_eq!(one.body, denied);
}

#[tokio::test]
async fn only_a_superuser_creates_a_shared_category() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let manager = api.user("mia", &[Group::Administrator], &[&acme]).await;

    let shared = api
        .post(
            CATEGORIES,
            &manager,
            json!({"name": "everyone", "organization": null}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        shared.body,
        json!({"organization": ["This field may not be null."]})
    );
    assert_eq!(
        api.get(CATEGORIES, &api.admin).await.body["count"],
        0,
        "no category was created"
    );

    let own = api
        .post(
            CATEGORIES,
            &manager,
            json!({"name": "routers", "organization": acme}),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);
    category(&api, "everyone", None).await;
}

#[tokio::test]
async fn the_organization_filter_leaves_shared_categories_out() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    category(&api, "shared", None).await;
    category(&api, "acme-routers", Some(&acme)).await;
    category(&api, "beta-routers", Some(&beta)).await;
    let manager = api.user("mia", &[Group::Administrator], &[&acme]).await;

    let all = api.get(CATEGORIES, &manager).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(names(&all.body), ["acme-routers", "shared"]);

    for token in [&manager, &api.admin] {
        let own = api
            .get(&format!("{CATEGORIES}?organization=acme"), token)
            .await;
        assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
        assert_eq!(own.body["count"], 1);
        assert_eq!(names(&own.body), ["acme-routers"]);
    }

    let unknown = api
        .get(&format!("{CATEGORIES}?organization=nowhere"), &manager)
        .await;
    assert_eq!(unknown.status, StatusCode::OK, "{:?}", unknown.body);
    assert_eq!(unknown.body["count"], 0);
    assert_eq!(unknown.body["results"], json!([]));
    let foreign = api
        .get(&format!("{CATEGORIES}?organization=beta"), &manager)
        .await;
    assert_eq!(foreign.body["count"], 0, "another organization's slug");
}

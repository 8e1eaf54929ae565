//! Handler tests of `/api/v1/users/user/` and `/api/v1/users/token/`: who may do what, and
//! the messages of invalid bodies.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, Reply, TestApi};
use fleetmq_store::Group;
use serde_json::{Value, json};

const USERS: &str = "/api/v1/users/user/";
const TOKEN: &str = "/api/v1/users/token/";
const REQUIRED: &str = "This field is required.";
const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";

/// Asks for a token with `body`.
async fn login(api: &TestApi, body: Value) -> Reply {
    api.call("POST", TOKEN, None, Some(body)).await
}

#[tokio::test]
async fn managers_see_the_members_of_their_organizations_but_change_no_one() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let manager = api.user("mia", &[Group::Administrator], &[&acme]).await;
    api.user("bo", &[Group::Operator], &[&beta]).await;
    let bo = api.user_id("bo").await;
    let mia = api.user_id("mia").await;

    let listed = api.get(USERS, &manager).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["count"], 1, "{:?}", listed.body);
    assert_eq!(listed.body["results"][0]["username"], "mia");
    assert_eq!(
        api.get(&format!("{USERS}{bo}/"), &manager).await.status,
        StatusCode::NOT_FOUND,
        "a member of another organization is not found"
    );
    assert_eq!(
        api.get(&format!("{USERS}{mia}/"), &manager).await.status,
        StatusCode::OK
    );

    let denied = json!({"detail": PERMISSION_DENIED});
    let created = api
        .post(
            USERS,
            &manager,
            json!({"username": "eve", "password": PASSWORD}),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    assert_eq!(created.body, denied);
    for method in ["PUT", "PATCH"] {
        let changed = api
            .call(
                method,
                &format!("{USERS}{mia}/"),
                Some(&manager),
                Some(json!({"username": "mia", "is_superuser": true})),
            )
            .await;
        assert_eq!(changed.status, StatusCode::FORBIDDEN, "{method}");
        assert_eq!(changed.body, denied, "{method}");
    }
    let deleted = api.delete(&format!("{USERS}{mia}/"), &manager).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api.get(&format!("{USERS}{mia}/"), &api.admin).await.body["is_superuser"],
        false,
        "nothing was changed"
    );
}

#[tokio::test]
async fn a_member_who_manages_no_organization_may_not_even_list_users() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let member = api.user("ned", &[Group::Operator], &[]).await;
    let ned = api.user_id("ned").await;
    let patched = api
        .patch(
            &format!("{USERS}{ned}/"),
            &api.admin,
            json!({"organization_users": [{"organization": acme, "is_admin": false}]}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);

    let listed = api.get(USERS, &member).await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);
    assert_eq!(
        listed.body,
        json!({"detail": "User is not a manager of the organization to which the requested resource belongs."})
    );
}

#[tokio::test]
async fn creating_a_user_requires_a_username_and_a_password_but_replacing_keeps_the_password() {
    let api = TestApi::start().await;
    let empty = api.post(USERS, &api.admin, json!({})).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        empty.body,
        json!({"username": [REQUIRED], "password": [REQUIRED]})
    );

    let created = api
        .post(
            USERS,
            &api.admin,
            json!({"username": "olga", "password": PASSWORD, "first_name": "Olga"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert!(created.body.get("password").is_none(), "never shown");
    let olga = created.str("id");

    let replaced = api
        .put(
            &format!("{USERS}{olga}/"),
            &api.admin,
            json!({"username": "olga2"}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["username"], "olga2");
    assert_eq!(
        replaced.body["first_name"], "Olga",
        "a replace leaves fields it does not name as they were"
    );
    let kept = login(&api, json!({"username": "olga2", "password": PASSWORD})).await;
    assert_eq!(kept.status, StatusCode::OK, "the password was kept");

    let no_username = api
        .put(&format!("{USERS}{olga}/"), &api.admin, json!({}))
        .await;
    assert_eq!(no_username.body, json!({"username": [REQUIRED]}));
}

#[tokio::test]
async fn invalid_user_fields_get_their_own_messages() {
    let api = TestApi::start().await;
    api.user("olga", &[], &[]).await;
    let olga = api.user_id("olga").await;
    let path = format!("{USERS}{olga}/");

    let reply = api
        .patch(
            &path,
            &api.admin,
            json!({
                "username": "has space",
                "password": "short",
                "email": "nope",
                "is_active": "maybe",
                "first_name": "x".repeat(151),
                "groups": ["Operator", "Wizard"],
                "organization_users": [{"organization": 5, "is_admin": "yes"}],
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({
            "username": ["Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."],
            "password": ["This password is too short. It must contain at least 8 characters."],
            "email": ["Enter a valid email address."],
            "is_active": ["Must be a valid boolean."],
            "first_name": ["Ensure this field has no more than 150 characters."],
            "groups": ["Object with name=Wizard does not exist."],
            "organization_users": {
                "organization": ["Incorrect type. Expected pk value, received int."],
                "is_admin": ["Must be a valid boolean."]
            },
        })
    );

    let lists = api
        .patch(
            &path,
            &api.admin,
            json!({"groups": "Operator", "organization_users": [{"is_admin": true}]}),
        )
        .await;
    assert_eq!(
        lists.body,
        json!({
            "groups": ["Expected a list of items."],
            "organization_users": {"organization": [REQUIRED]},
        })
    );

    let unknown = uuid::Uuid::new_v4();
    let missing_org = api
        .patch(
            &path,
            &api.admin,
            json!({"organization_users": [{"organization": unknown}]}),
        )
        .await;
    assert_eq!(
        missing_org.body,
        json!({"organization_users": [format!("Invalid pk \"{unknown}\" - object does not exist.")]})
    );
    assert_eq!(
        api.get(&path, &api.admin).await.body["username"],
        "olga",
        "nothing was changed"
    );
}

#[tokio::test]
async fn memberships_and_groups_are_stored_once_each() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let created = api
        .post(
            USERS,
            &api.admin,
            json!({
                "username": "olga", "password": PASSWORD,
                "groups": ["Operator", "Operator"],
                "organization_users": [
                    {"organization": acme, "is_admin": true},
                    {"organization": acme, "is_admin": false}
                ],
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["groups"], json!(["Operator"]));
    assert_eq!(
        created.body["organization_users"],
        json!([{"organization": acme, "is_admin": true}])
    );
}

#[tokio::test]
async fn tokens_need_both_fields_and_the_right_password() {
    let api = TestApi::start().await;
    api.user("olga", &[], &[]).await;

    let nothing = api.call("POST", TOKEN, None, None).await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        nothing.body,
        json!({"username": [REQUIRED], "password": [REQUIRED]})
    );
    let blank = login(&api, json!({"username": "", "password": PASSWORD})).await;
    assert_eq!(
        blank.body,
        json!({"username": ["This field may not be blank."]})
    );
    let wrong = login(
        &api,
        json!({"username": "olga", "password": "not-her-password"}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.body,
        json!({"non_field_errors": ["Unable to log in with provided credentials."]})
    );

    let right = login(&api, json!({"username": "olga", "password": PASSWORD})).await;
    assert_eq!(right.status, StatusCode::OK);
    let token = right.str("token");
    assert_eq!(token.len(), 40);
    assert_eq!(
        api.get(USERS, &token).await.status,
        StatusCode::FORBIDDEN,
        "the token authenticates (olga manages nothing, so she may not list)"
    );
}

#[tokio::test]
async fn deleting_a_user_ends_their_tokens() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let token = api.user("olga", &[Group::Operator], &[&acme]).await;
    let olga = api.user_id("olga").await;
    assert_eq!(api.get(USERS, &token).await.status, StatusCode::OK);

    let deleted = api.delete(&format!("{USERS}{olga}/"), &api.admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = api.get(USERS, &token).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.delete(&format!("{USERS}{olga}/"), &api.admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

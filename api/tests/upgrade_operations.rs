//! Handler tests of `/api/v1/firmware-upgrader/upgrade-operation/` and
//! `/api/v1/firmware-upgrader/device/{device_id}/upgrade-operation/`: who sees which
//! operations, the list's filters, the detail, and cancelling before flashing begins.
//!
//! Operations are started through the API (setting a device's firmware); the rollout engine's
//! progress is written to the store, as the engine would.

mod common;

use axum::http::StatusCode;
use common::firmware::{FW, Fleet, SIM_TYPE, column, device_operations_path};
use serde_json::{Value, json};
use uuid::Uuid;

const OPERATIONS: &str = "/api/v1/firmware-upgrader/upgrade-operation/";
const TOO_LATE: &str = "Cannot cancel upgrade: firmware reflashing has already started";

fn operation_path(id: &str) -> String {
    format!("{OPERATIONS}{id}/")
}

fn cancel_path(id: &str) -> String {
    format!("{OPERATIONS}{id}/cancel/")
}

/// The ids an operation list (with `query`) shows `token`, checking the count matches.
async fn listed(f: &Fleet, query: &str, token: &str) -> Vec<String> {
    let reply = f.get(&format!("{OPERATIONS}{query}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
    let ids = column(&reply.body, "id");
    assert_eq!(reply.body["count"], ids.len(), "{query}");
    ids
}

#[tokio::test]
async fn each_organization_lists_only_its_own_operations() {
    let f = Fleet::start().await;
    let acme_op = f.upgrade(&f.device, &f.old_image).await;
    let beta_op = f.upgrade(&f.beta_device, &f.beta_image).await;

    let mut all = listed(&f, "", &f.root).await;
    all.sort();
    let mut both = vec![acme_op.clone(), beta_op.clone()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(listed(&f, "", &f.admin).await, [acme_op.as_str()]);
    assert_eq!(listed(&f, "", &f.operator).await, [acme_op.as_str()]);
    assert_eq!(listed(&f, "", &f.other).await, [beta_op.as_str()]);
}

#[tokio::test]
async fn filters_never_reach_past_the_callers_organizations() {
    let f = Fleet::start().await;
    f.upgrade(&f.device, &f.old_image).await;
    f.upgrade(&f.beta_device, &f.beta_image).await;

    for query in [
        format!("?device__organization={}", f.beta),
        "?device__organization__slug=beta".to_owned(),
        "?device__organization_slug=beta".to_owned(),
        format!("?device={}", f.beta_device),
        format!("?image={}", f.beta_image),
    ] {
        assert!(
            listed(&f, &query, &f.admin).await.is_empty(),
            "acme's administrator sees nothing of beta with {query}"
        );
    }
}

#[tokio::test]
async fn operations_are_filtered_by_organization_device_image_status_and_batch() {
    let f = Fleet::start().await;
    let superseded = f.upgrade(&f.device, &f.old_image).await;
    let acme_op = f.upgrade(&f.device, &f.new_image).await;
    let beta_op = f.upgrade(&f.beta_device, &f.beta_image).await;
    let root = &f.root;

    assert_eq!(
        listed(&f, &format!("?device__organization={}", f.acme), root).await,
        [acme_op.as_str(), superseded.as_str()],
        "newest first"
    );
    for query in [
        "?device__organization__slug=beta",
        "?device__organization_slug=beta",
        // The documented spelling wins over the alias.
        "?device__organization_slug=acme&device__organization__slug=beta",
    ] {
        assert_eq!(listed(&f, query, root).await, [beta_op.as_str()], "{query}");
    }
    for query in [
        "?device__organization__slug=nowhere".to_owned(),
        format!(
            "?device__organization={}&device__organization__slug=beta",
            f.acme
        ),
        format!("?device__organization={}", Uuid::new_v4()),
        format!("?batch={}", Uuid::new_v4()),
    ] {
        assert!(listed(&f, &query, root).await.is_empty(), "{query}");
    }
    assert_eq!(
        listed(&f, &format!("?device={}", f.device), root).await,
        [acme_op.as_str(), superseded.as_str()]
    );
    assert_eq!(
        listed(&f, &format!("?image={}", f.old_image), root).await,
        [superseded.as_str()]
    );
    assert_eq!(
        listed(&f, "?status=aborted", root).await,
        [superseded.as_str()],
        "a newer upgrade of the device aborted the older one"
    );
    assert_eq!(listed(&f, "?status=in-progress", root).await.len(), 2);
    assert!(listed(&f, "?status=success", root).await.is_empty());
    assert_eq!(
        listed(&f, "?status=", root).await.len(),
        3,
        "an empty filter is no filter"
    );
}

#[tokio::test]
async fn a_bad_filter_is_a_field_error() {
    let f = Fleet::start().await;
    let reply = f
        .get(&format!("{OPERATIONS}?status=done&device=nope"), &f.admin)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({
            "status": ["Select a valid choice. done is not one of the available choices."],
            "device": ["“nope” is not a valid UUID."]
        })
    );
}

#[tokio::test]
async fn an_operation_is_shown_to_its_organization_with_or_without_the_trailing_slash() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;

    let shown = f.get(&operation_path(&op), &f.operator).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(shown.body["id"], op.as_str());
    assert_eq!(shown.body["device"], f.device.as_str());
    assert_eq!(shown.body["image"], f.old_image.as_str());
    assert_eq!(shown.body["batch"], Value::Null);
    assert_eq!(shown.body["status"], "in-progress");
    assert_eq!(shown.body["progress"], 0);
    assert_eq!(shown.body["flagged"], false);
    assert_eq!(
        shown.body["log"],
        format!("Upgrade to 1.0 ({SIM_TYPE}) queued")
    );
    let bare = f.get(&format!("{OPERATIONS}{op}"), &f.operator).await;
    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(bare.body, shown.body);

    for path in [
        operation_path(&Uuid::new_v4().to_string()),
        operation_path("nope"),
        format!("{OPERATIONS}{}", Uuid::new_v4()),
    ] {
        let missing = f.get(&path, &f.root).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(missing.body, json!({"detail": "Not found."}));
    }
}

#[tokio::test]
async fn callers_are_refused_before_operations_are_looked_at() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;
    let device_ops = device_operations_path(&f.device);

    for (token, status, body) in f.refused() {
        for (method, path) in [
            ("GET", OPERATIONS.to_owned()),
            ("GET", operation_path(&op)),
            ("GET", device_ops.clone()),
            ("POST", cancel_path(&op)),
        ] {
            let reply = f.call(method, &path, token, None).await;
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(reply.body, body, "{method} {path}");
        }
    }
    let bad_token = f.call("GET", OPERATIONS, Some("not-a-token"), None).await;
    assert_eq!(bad_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad_token.body, json!({"detail": "Invalid token."}));
    assert_eq!(
        f.get(&operation_path(&op), &f.root).await.body["status"],
        "in-progress",
        "nobody cancelled it"
    );
}

#[tokio::test]
async fn an_operator_sees_operations_but_may_not_cancel_them() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;

    let cancel = f
        .call("POST", &cancel_path(&op), Some(&f.operator), None)
        .await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN);
    assert_eq!(
        cancel.body,
        json!({"detail": "You do not have permission to perform this action."})
    );
    let mine = f.get(&device_operations_path(&f.device), &f.operator).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(column(&mine.body, "id"), [op.as_str()]);
    assert_eq!(
        f.get(&operation_path(&op), &f.root).await.body["status"],
        "in-progress"
    );
}

#[tokio::test]
async fn another_organizations_operations_and_devices_are_not_found() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;

    for (method, path) in [
        ("GET", operation_path(&op)),
        ("GET", format!("{OPERATIONS}{op}")),
        ("POST", cancel_path(&op)),
        ("GET", device_operations_path(&f.device)),
        // A device not found comes before its filter is judged.
        (
            "GET",
            format!("{}?status=done", device_operations_path(&f.device)),
        ),
    ] {
        let reply = f.call(method, &path, Some(&f.other), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"detail": "Not found."}),
            "{method} {path}"
        );
    }
    assert_eq!(
        f.get(&operation_path(&op), &f.root).await.body["status"],
        "in-progress",
        "the other organization cancelled nothing"
    );
}

#[tokio::test]
async fn an_operation_is_cancelled_once_and_only_before_flashing() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;
    f.advance(&op, 64, None).await;

    let cancelled = f
        .call("POST", &cancel_path(&op), Some(&f.admin), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["id"], op.as_str());
    assert_eq!(cancelled.body["status"], "cancelled");
    assert!(
        cancelled.str("log").ends_with("Cancelled by user"),
        "{:?}",
        cancelled.body
    );
    assert_eq!(
        f.get(&operation_path(&op), &f.admin).await.body,
        cancelled.body
    );

    let again = f
        .call("POST", &cancel_path(&op), Some(&f.admin), None)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(
        again.body,
        json!({"error": "Cannot cancel upgrade: the operation has already ended (cancelled)."})
    );

    let flashing = f.upgrade(&f.device, &f.new_image).await;
    f.advance(&flashing, 65, None).await;
    let late = f
        .call("POST", &cancel_path(&flashing), Some(&f.admin), None)
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(late.body, json!({"error": TOO_LATE}));
    let still = f.get(&operation_path(&flashing), &f.admin).await;
    assert_eq!(still.body["status"], "in-progress");
    assert_eq!(still.body["progress"], 65);

    let missing = f
        .call(
            "POST",
            &cancel_path(&Uuid::new_v4().to_string()),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_finished_operation_cannot_be_cancelled() {
    let f = Fleet::start().await;
    let op = f.upgrade(&f.device, &f.old_image).await;
    f.advance(&op, 100, Some("success")).await;

    let reply = f.call("POST", &cancel_path(&op), Some(&f.root), None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.body,
        json!({"error": "Cannot cancel upgrade: the operation has already ended (success)."})
    );
    assert_eq!(
        f.get(&operation_path(&op), &f.root).await.body["status"],
        "success"
    );
}

#[tokio::test]
async fn a_devices_operations_are_listed_newest_first_and_filtered_by_status() {
    let f = Fleet::start().await;
    let old = f.upgrade(&f.device, &f.old_image).await;
    let new = f.upgrade(&f.device, &f.new_image).await;
    f.upgrade(&f.beta_device, &f.beta_image).await;
    let path = device_operations_path(&f.device);

    let all = f.get(&path, &f.admin).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["count"], 2);
    assert_eq!(column(&all.body, "id"), [new.as_str(), old.as_str()]);
    assert_eq!(column(&all.body, "status"), ["in-progress", "aborted"]);

    let aborted = f.get(&format!("{path}?status=aborted"), &f.admin).await;
    assert_eq!(column(&aborted.body, "id"), [old.as_str()]);
    let none = f.get(&format!("{path}?status=failed"), &f.admin).await;
    assert_eq!(none.body["count"], 0);
    assert_eq!(none.body["results"], json!([]));

    let bad = f.get(&format!("{path}?status=done"), &f.admin).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body,
        json!({"status": ["Select a valid choice. done is not one of the available choices."]})
    );
    for missing in [
        device_operations_path(&Uuid::new_v4().to_string()),
        format!(
            "{}?status=done",
            device_operations_path(&Uuid::new_v4().to_string())
        ),
        device_operations_path("nope"),
        format!("{FW}/device/{}/upgrade-operation/", f.beta_device),
    ] {
        let reply = f.get(&missing, &f.admin).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
    }
}

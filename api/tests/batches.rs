//! Handler tests of mass upgrades: `/api/v1/firmware-upgrader/build/{id}/upgrade/` (the dry
//! run and the start) and `/api/v1/firmware-upgrader/batch-upgrade-operation/` (list, detail,
//! cancel) — which devices a batch reaches, who may see and start one, and what a bad body or
//! query is told.

mod common;

use axum::http::StatusCode;
use common::firmware::{FW, Fleet, PERMISSION_DENIED, SIM_BOARD, SIM_TYPE, column};
use serde_json::{Value, json};
use uuid::Uuid;

const BATCHES: &str = "/api/v1/firmware-upgrader/batch-upgrade-operation/";
const NOTHING_MATCHES: &str =
    "No devices found matching the specified filters. Please adjust the filters and try again.";

fn upgrade_path(build: &str) -> String {
    format!("{FW}/build/{build}/upgrade/")
}

fn batch_path(id: &str) -> String {
    format!("{BATCHES}{id}/")
}

fn cancel_path(id: &str) -> String {
    format!("{BATCHES}{id}/cancel/")
}

fn does_not_exist(field: &str, pk: &str) -> Value {
    json!({field: [format!("Invalid pk \"{pk}\" - object does not exist.")]})
}

/// Starts a mass upgrade of `build` as `token`; returns the batch id.
async fn start(f: &Fleet, build: &str, token: &str, body: Value) -> String {
    let reply = f.post(&upgrade_path(build), token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.str("batch")
}

/// The batch ids a list (with `query`) shows `token`, checking the count matches.
async fn listed(f: &Fleet, query: &str, token: &str) -> Vec<String> {
    let reply = f.get(&format!("{BATCHES}{query}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
    let ids = column(&reply.body, "id");
    assert_eq!(reply.body["count"], ids.len(), "{query}");
    ids
}

/// The `device` (or `id`) of each entry of a dry run's `key` list.
fn reached(dry_run: &Value, key: &str, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = dry_run[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d[field].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_dry_run_lists_firmwares_to_upgrade_and_devices_without_firmware() {
    let f = Fleet::start().await;
    f.upgrade(&f.device, &f.old_image).await;
    let bare = f.device_of(&f.acme, "ap2", SIM_BOARD).await;
    let off = f.device_of(&f.acme, "ap3", SIM_BOARD).await;
    f.deactivate(&off).await;
    f.device(&f.acme, "no-model").await;

    let dry = f.get(&upgrade_path(&f.new_build), &f.operator).await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    let firmwares = dry.body["device_firmwares"].as_array().expect("a list");
    assert_eq!(firmwares.len(), 1, "{:?}", dry.body);
    assert_eq!(firmwares[0]["device"], f.device.as_str());
    assert_eq!(firmwares[0]["device_name"], "ap1");
    assert_eq!(firmwares[0]["image"], f.old_image.as_str());
    assert_eq!(firmwares[0]["installed"], false);
    assert_eq!(firmwares[0]["target_image"], f.new_image.as_str());
    let devices = dry.body["devices"].as_array().expect("a list");
    assert_eq!(devices.len(), 1, "{:?}", dry.body);
    assert_eq!(devices[0]["id"], bare.as_str());
    assert_eq!(devices[0]["name"], "ap2");
    assert_eq!(devices[0]["organization"], f.acme.as_str());
    assert_eq!(devices[0]["model"], SIM_BOARD);
    assert_eq!(devices[0]["target_image"], f.new_image.as_str());

    let same_build = f.get(&upgrade_path(&f.old_build), &f.admin).await;
    assert_eq!(
        same_build.body["device_firmwares"],
        json!([]),
        "a device already on the build is not upgraded to it"
    );
}

#[tokio::test]
async fn a_shared_builds_dry_run_reaches_only_the_callers_organizations() {
    let f = Fleet::start().await;
    let shared = f.category("everyone", None).await;
    let build = f.build(&shared, "3.0").await;
    f.image(&build, SIM_TYPE, b"shared 3.0").await;
    let path = upgrade_path(&build);

    let mine = f.get(&path, &f.admin).await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);
    assert_eq!(reached(&mine.body, "devices", "id"), [f.device.as_str()]);
    let theirs = f.get(&path, &f.other).await;
    assert_eq!(
        reached(&theirs.body, "devices", "id"),
        [f.beta_device.as_str()]
    );
    let mut both = vec![f.device.clone(), f.beta_device.clone()];
    both.sort();
    assert_eq!(
        reached(&f.get(&path, &f.root).await.body, "devices", "id"),
        both
    );
}

#[tokio::test]
async fn the_dry_run_is_narrowed_to_a_location_the_caller_can_see() {
    let f = Fleet::start().await;
    f.device_of(&f.acme, "ap2", SIM_BOARD).await;
    let here = f.locate(&f.device).await;
    let beta_place = f.locate(&f.beta_device).await;
    let path = upgrade_path(&f.new_build);

    let narrowed = f.get(&format!("{path}?location={here}"), &f.admin).await;
    assert_eq!(narrowed.status, StatusCode::OK, "{:?}", narrowed.body);
    assert_eq!(
        reached(&narrowed.body, "devices", "id"),
        [f.device.as_str()]
    );
    assert_eq!(
        reached(&f.get(&path, &f.admin).await.body, "devices", "id").len(),
        2
    );

    let group = Uuid::new_v4().to_string();
    for (query, errors) in [
        (
            format!("?location={beta_place}"),
            does_not_exist("location", &beta_place),
        ),
        (
            "?location=nope".to_owned(),
            does_not_exist("location", "nope"),
        ),
        (format!("?group={group}"), does_not_exist("group", &group)),
    ] {
        let reply = f.get(&format!("{path}{query}"), &f.admin).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.body, errors, "{query}");
    }
}

#[tokio::test]
async fn callers_are_refused_before_a_build_is_looked_at() {
    let f = Fleet::start().await;
    let path = upgrade_path(&f.new_build);
    for (token, status, body) in f.refused() {
        for method in ["GET", "POST"] {
            let reply = f.call(method, &path, token, Some(json!({}))).await;
            assert_eq!(reply.status, status, "{method}");
            assert_eq!(reply.body, body, "{method}");
        }
    }
    let start = f
        .post(&path, &f.operator, json!({"upgrade_all": true}))
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN);
    assert_eq!(start.body, json!({"detail": PERMISSION_DENIED}));
    assert!(listed(&f, "", &f.root).await.is_empty(), "no batch started");
}

#[tokio::test]
async fn another_organizations_build_is_not_found_before_the_body_or_query_is_judged() {
    let f = Fleet::start().await;
    let path = upgrade_path(&f.new_build);
    for reply in [
        f.get(&path, &f.other).await,
        f.get(&format!("{path}?group=nope"), &f.other).await,
        f.post(&path, &f.other, json!({"upgrade_all": true})).await,
        f.post(&path, &f.other, json!({"max_parallel": 0})).await,
        f.post(
            &upgrade_path(&Uuid::new_v4().to_string()),
            &f.root,
            json!({"waves": 5}),
        )
        .await,
        f.get(&upgrade_path("nope"), &f.root).await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:?}", reply.body);
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    assert!(listed(&f, "", &f.root).await.is_empty(), "no batch started");
}

#[tokio::test]
async fn only_a_superuser_starts_a_mass_upgrade_of_a_shared_build() {
    let f = Fleet::start().await;
    let shared = f.category("everyone", None).await;
    let build = f.build(&shared, "3.0").await;
    f.image(&build, SIM_TYPE, b"shared 3.0").await;

    for body in [json!({"upgrade_all": true}), json!({"max_parallel": 0})] {
        let refused = f.post(&upgrade_path(&build), &f.admin, body.clone()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            refused.body,
            json!({"detail": "Only superusers can start mass upgrades of shared builds."})
        );
    }
    assert!(listed(&f, "", &f.root).await.is_empty());

    let batch = start(&f, &build, &f.root, json!({"upgrade_all": true})).await;
    let shown = f.get(&batch_path(&batch), &f.root).await;
    assert_eq!(shown.body["total"], 2, "every organization's device");
    // The batch upgrades beta's device too: acme's administrator does not see it.
    assert!(listed(&f, "", &f.admin).await.is_empty());
    assert_eq!(
        f.get(&batch_path(&batch), &f.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_batch_upgrades_firmwares_and_with_upgrade_all_devices_without_firmware() {
    let f = Fleet::start().await;
    let old_op = f.upgrade(&f.device, &f.old_image).await;
    let bare = f.device_of(&f.acme, "ap2", SIM_BOARD).await;

    let batch = start(&f, &f.new_build, &f.admin, json!({})).await;
    let shown = f.get(&batch_path(&batch), &f.admin).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(shown.body["id"], batch.as_str());
    assert_eq!(shown.body["build"], f.new_build.as_str());
    assert_eq!(shown.body["status"], "in-progress");
    assert_eq!(shown.body["total"], 1);
    assert_eq!(shown.body["progress_report"], "0 out of 1");
    assert_eq!(
        shown.body["status_counts"],
        json!({"in-progress": 1, "success": 0, "failed": 0, "aborted": 0, "cancelled": 0})
    );
    assert_eq!(
        shown.body["rollout"],
        json!({"max_parallel": null, "rate_per_minute": null, "waves": [],
               "abort_threshold": null})
    );
    assert_eq!(shown.body["upgrade_operations_count"], 1);
    let op = &shown.body["upgrade_operations"][0];
    assert_eq!(op["device"], f.device.as_str());
    assert_eq!(op["image"], f.new_image.as_str());
    assert_eq!(op["batch"], batch.as_str());
    let old = f
        .get(&format!("{FW}/upgrade-operation/{old_op}/"), &f.admin)
        .await;
    assert_eq!(old.body["status"], "aborted", "superseded by the batch");

    // ap1 is on its way to this build already: only ap2, without firmware, is left.
    let all = start(
        &f,
        &f.new_build,
        &f.admin,
        json!({"upgrade_all": "yes", "max_parallel": "2", "rate_per_minute": 10,
               "waves": [50, 100], "abort_threshold": {"failure_rate": 0.5, "min_sample": 4},
               "group": null, "location": ""}),
    )
    .await;
    let shown = f.get(&batch_path(&all), &f.admin).await;
    assert_eq!(shown.body["total"], 1);
    assert_eq!(shown.body["upgrade_operations"][0]["device"], bare.as_str());
    assert_eq!(
        shown.body["rollout"],
        json!({"max_parallel": 2, "rate_per_minute": 10, "waves": [50, 100],
               "abort_threshold": {"failure_rate": 0.5, "min_sample": 4}})
    );
}

#[tokio::test]
async fn a_mass_upgrade_that_reaches_nobody_is_refused() {
    let f = Fleet::start().await;
    let imageless = f.build(&f.category, "3.0").await;
    for (build, body) in [
        (&imageless, json!({"upgrade_all": true})),
        // No device has firmware yet, and without upgrade_all only firmwares are upgraded.
        (&f.new_build, json!({})),
    ] {
        let reply = f.post(&upgrade_path(build), &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, json!({"error": NOTHING_MATCHES}), "{body}");
    }
    assert!(listed(&f, "", &f.root).await.is_empty(), "no batch started");
}

#[tokio::test]
async fn a_batch_body_is_checked_field_by_field() {
    let f = Fleet::start().await;
    let path = upgrade_path(&f.new_build);
    let beta_place = f.locate(&f.beta_device).await;
    let group = Uuid::new_v4().to_string();
    for (body, errors) in [
        (
            json!({"upgrade_all": "maybe", "max_parallel": 0, "rate_per_minute": "fast",
                   "waves": [50, 10]}),
            json!({
                "upgrade_all": ["Must be a valid boolean."],
                "max_parallel": ["Ensure this value is greater than or equal to 1."],
                "rate_per_minute": ["A valid integer is required."],
                "waves": ["Waves must be in strictly ascending order."]
            }),
        ),
        (
            json!({"max_parallel": 4_294_967_296_u64}),
            json!({"max_parallel": ["Ensure this value is less than or equal to 4294967295."]}),
        ),
        (
            json!({"waves": [10, 50]}),
            json!({"waves": ["The last wave must be 100."]}),
        ),
        (
            json!({"waves": [0, 100]}),
            json!({"waves": ["Each wave must be an integer from 1 to 100."]}),
        ),
        (
            json!({"waves": 5}),
            json!({"waves": ["Expected a list of items but got type \"int\"."]}),
        ),
        (
            json!({"abort_threshold": {"failure_rate": 0.5}}),
            json!({"abort_threshold": {"min_sample": ["This field is required."]}}),
        ),
        (
            json!({"abort_threshold": {}}),
            json!({"abort_threshold": {
                "failure_rate": ["This field is required."],
                "min_sample": ["This field is required."]
            }}),
        ),
        (
            json!({"abort_threshold": {"failure_rate": 0, "min_sample": 3}}),
            json!({"abort_threshold": {
                "failure_rate": ["Ensure this value is greater than 0 and at most 1."]
            }}),
        ),
        (
            json!({"abort_threshold": {"failure_rate": "half", "min_sample": 0}}),
            json!({"abort_threshold": {
                "failure_rate": ["A valid number is required."],
                "min_sample": ["Ensure this value is greater than or equal to 1."]
            }}),
        ),
        (
            json!({"abort_threshold": 5}),
            json!({"abort_threshold": ["Expected a dictionary of items but got type \"int\"."]}),
        ),
        (
            json!({"upgrade_all": true, "group": group}),
            does_not_exist("group", &group),
        ),
        (
            json!({"upgrade_all": true, "location": beta_place}),
            does_not_exist("location", &beta_place),
        ),
        (
            json!({"location": 7}),
            json!({"location": ["Incorrect type. Expected pk value, received int."]}),
        ),
    ] {
        let reply = f.post(&path, &f.admin, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, errors, "{body}");
    }
    assert!(listed(&f, "", &f.root).await.is_empty(), "no batch started");
}

#[tokio::test]
async fn each_organization_lists_only_its_batches() {
    let f = Fleet::start().await;
    let acme = start(&f, &f.new_build, &f.admin, json!({"upgrade_all": true})).await;
    let beta = start(&f, &f.beta_build, &f.other, json!({"upgrade_all": true})).await;

    let mut all = listed(&f, "", &f.root).await;
    all.sort();
    let mut both = vec![acme.clone(), beta.clone()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(listed(&f, "", &f.admin).await, [acme.as_str()]);
    assert_eq!(listed(&f, "", &f.operator).await, [acme.as_str()]);
    assert_eq!(listed(&f, "", &f.other).await, [beta.as_str()]);

    for token in [&f.root, &f.admin] {
        assert_eq!(
            listed(&f, "?organization=acme", token).await,
            [acme.as_str()]
        );
    }
    assert_eq!(
        listed(&f, "?organization=beta", &f.root).await,
        [beta.as_str()]
    );
    for query in [
        "?organization=beta".to_owned(),
        "?organization=nowhere".to_owned(),
        format!("?build={}", f.beta_build),
    ] {
        assert!(
            listed(&f, &query, &f.admin).await.is_empty(),
            "acme's administrator sees nothing with {query}"
        );
    }
    let list = f.get(BATCHES, &f.admin).await;
    assert!(
        list.body["results"][0].get("upgrade_operations").is_none(),
        "the list leaves the operations out: {:?}",
        list.body
    );
}

#[tokio::test]
async fn batches_are_filtered_by_build_and_status() {
    let f = Fleet::start().await;
    let first = start(&f, &f.new_build, &f.admin, json!({"upgrade_all": true})).await;
    let cancelled = f
        .call("POST", &cancel_path(&first), Some(&f.admin), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    let second = start(&f, &f.old_build, &f.admin, json!({"upgrade_all": true})).await;
    let admin = &f.admin;

    assert_eq!(
        listed(&f, "", admin).await,
        [second.as_str(), first.as_str()]
    );
    assert_eq!(
        listed(&f, &format!("?build={}", f.new_build), admin).await,
        [first.as_str()]
    );
    assert_eq!(
        listed(&f, "?status=cancelled", admin).await,
        [first.as_str()]
    );
    assert_eq!(
        listed(&f, "?status=in-progress", admin).await,
        [second.as_str()]
    );
    assert!(listed(&f, "?status=success", admin).await.is_empty());
    assert_eq!(listed(&f, "?status=&build=", admin).await.len(), 2);

    let bad = f
        .get(&format!("{BATCHES}?status=done&build=nope"), admin)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body,
        json!({
            "status": ["Select a valid choice. done is not one of the available choices."],
            "build": ["“nope” is not a valid UUID."]
        })
    );
}

#[tokio::test]
async fn callers_are_refused_before_batches_are_looked_at() {
    let f = Fleet::start().await;
    let batch = start(&f, &f.new_build, &f.admin, json!({"upgrade_all": true})).await;
    for (token, status, body) in f.refused() {
        for (method, path) in [
            ("GET", BATCHES.to_owned()),
            ("GET", batch_path(&batch)),
            ("POST", cancel_path(&batch)),
        ] {
            let reply = f.call(method, &path, token, None).await;
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(reply.body, body, "{method} {path}");
        }
    }
    assert_eq!(
        f.get(&batch_path(&batch), &f.operator).await.status,
        StatusCode::OK
    );
    let cancel = f
        .call("POST", &cancel_path(&batch), Some(&f.operator), None)
        .await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN);
    assert_eq!(cancel.body, json!({"detail": PERMISSION_DENIED}));
    assert_eq!(
        f.get(&batch_path(&batch), &f.root).await.body["status"],
        "in-progress"
    );
}

#[tokio::test]
async fn another_organizations_batch_is_not_found() {
    let f = Fleet::start().await;
    let batch = start(&f, &f.new_build, &f.admin, json!({"upgrade_all": true})).await;
    for (method, path, token) in [
        ("GET", batch_path(&batch), &f.other),
        ("POST", cancel_path(&batch), &f.other),
        ("GET", batch_path(&Uuid::new_v4().to_string()), &f.root),
        ("POST", cancel_path(&Uuid::new_v4().to_string()), &f.root),
        ("GET", batch_path("nope"), &f.root),
    ] {
        let reply = f.call(method, &path, Some(token), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(reply.body, json!({"detail": "Not found."}));
    }
    assert_eq!(
        f.get(&batch_path(&batch), &f.root).await.body["status"],
        "in-progress",
        "the other organization cancelled nothing"
    );
}

#[tokio::test]
async fn cancelling_a_batch_spares_operations_that_began_flashing() {
    let f = Fleet::start().await;
    let bare = f.device_of(&f.acme, "ap2", SIM_BOARD).await;
    let batch = start(&f, &f.new_build, &f.admin, json!({"upgrade_all": true})).await;
    let shown = f.get(&batch_path(&batch), &f.admin).await;
    let flashing = shown.body["upgrade_operations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|op| op["device"] == bare.as_str())
        .and_then(|op| op["id"].as_str())
        .expect("ap2's operation")
        .to_owned();
    f.advance(&flashing, 70, None).await;

    let cancelled = f
        .call("POST", &cancel_path(&batch), Some(&f.admin), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "in-progress");
    assert_eq!(cancelled.body["status_counts"]["cancelled"], 1);
    assert_eq!(cancelled.body["status_counts"]["in-progress"], 1);
    assert_eq!(cancelled.body["cancelled_rate"], 50);
    assert_eq!(cancelled.body["progress_report"], "1 out of 2");
    let statuses: Vec<(String, String)> = cancelled.body["upgrade_operations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|op| {
            (
                op["device"].as_str().unwrap_or_default().to_owned(),
                op["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&(bare.clone(), "in-progress".to_owned())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(f.device.clone(), "cancelled".to_owned())),
        "{statuses:?}"
    );

    f.advance(&flashing, 100, Some("success")).await;
    let again = f
        .call("POST", &cancel_path(&batch), Some(&f.admin), None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "cancelling again is harmless");
    assert_eq!(again.body["status"], "cancelled");
    assert_eq!(again.body["progress_report"], "2 out of 2");
    assert_eq!(again.body["success_rate"], 50);
    assert_eq!(again.body["cancelled_rate"], 50);
}

//! The firmware upgrader's upgrade endpoints: image types, device firmware, upgrade
//! operations, mass upgrades and device download links. Devices here never connect (except
//! in the download test), so operations stay queued: these tests check what the API stores
//! and answers, not what the rollout engine does.

use fleetmq_protocol::{DownChannel, UpdateRequest};
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient};
use fleetmq_tests::{Reply, TestApp};
use serde_json::{Value, json};

const FW: &str = "/api/v1/firmware-upgrader";
/// The built-in image type of the simulator's board.
const SIM_TYPE: &str = "fleetmq-sim-squashfs-sysupgrade.bin";
const SIM_BOARD: &str = "sim-board";

async fn upload(app: &TestApp, token: &str, build: &str, kind: &str, bytes: Vec<u8>) -> Reply {
    let form = reqwest::multipart::Form::new()
        .text("type", kind.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("image.bin"),
        );
    let response = app
        .http
        .post(format!("{}{FW}/build/{build}/image/", app.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply { status, body }
}

/// Creates a category of `org`; returns its id.
async fn category(app: &TestApp, token: &str, org: &str, name: &str) -> String {
    let reply = app
        .post(
            &format!("{FW}/category/"),
            token,
            json!({"name": name, "organization": org}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.str("id")
}

/// Creates a build of `category` with a simulator image; returns (build, image).
async fn build(app: &TestApp, token: &str, category: &str, version: &str) -> (String, String) {
    let reply = app
        .post(
            &format!("{FW}/build/"),
            token,
            json!({"category": category, "version": version}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let build = reply.str("id");
    let image = upload(
        app,
        token,
        &build,
        SIM_TYPE,
        format!("firmware {version}").into_bytes(),
    )
    .await;
    assert_eq!(image.status, 201, "{:?}", image.body);
    (build, image.str("id"))
}

/// Registers a device of `model`; returns its id.
async fn device(app: &TestApp, token: &str, org: &str, name: &str, model: &str) -> String {
    let reply = app
        .post(
            "/api/v1/controller/device/",
            token,
            json!({"name": name, "organization": org, "model": model,
                   "mac_address": fleetmq_tests::mac_for(name)}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.str("id")
}

fn firmware_path(device: &str) -> String {
    format!("{FW}/device/{device}/firmware/")
}

async fn put_firmware(app: &TestApp, token: &str, device: &str, image: &str) -> Reply {
    app.call(
        "PUT",
        &firmware_path(device),
        Some(token),
        Some(json!({"image": image})),
    )
    .await
}

/// Two organizations, an administrator and an operator of the first, an administrator of the
/// second, and a category of the first with builds 1.0 and 2.0.
struct Fleet {
    app: TestApp,
    acme: String,
    beta: String,
    admin: String,
    operator: String,
    beta_admin: String,
    old: (String, String),
    new: (String, String),
}

async fn fleet() -> Fleet {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let beta = app.create_org("beta").await;
    let admin = app.create_user("ada", &["Administrator"], &[&acme]).await;
    let operator = app.create_user("otto", &["Operator"], &[&acme]).await;
    let beta_admin = app.create_user("bea", &["Administrator"], &[&beta]).await;
    let category = category(&app, &admin, &acme, "Routers").await;
    let old = build(&app, &admin, &category, "1.0").await;
    let new = build(&app, &admin, &category, "2.0").await;
    Fleet {
        app,
        acme,
        beta,
        admin,
        operator,
        beta_admin,
        old,
        new,
    }
}

#[tokio::test]
async fn putting_device_firmware_starts_an_upgrade_and_a_new_one_supersedes_it() {
    let f = fleet().await;
    let app = &f.app;
    let ap = device(app, &f.admin, &f.acme, "ap1", SIM_BOARD).await;

    let first = put_firmware(app, &f.admin, &ap, &f.old.1).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["image"], f.old.1.as_str());
    assert_eq!(first.body["installed"], false);
    let op = &first.body["upgrade_operation"];
    assert_eq!(op["status"], "in-progress");
    assert_eq!(op["device"], ap.as_str());
    assert_eq!(op["image"], f.old.1.as_str());
    assert_eq!(op["batch"], Value::Null);
    assert_eq!(op["progress"], 0);
    assert_eq!(op["flagged"], false);
    let first_op = op["id"].as_str().expect("operation id").to_owned();

    let shown = app.get(&firmware_path(&ap), &f.admin).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["image"], f.old.1.as_str());
    assert!(shown.body.get("upgrade_operation").is_none());

    let second = put_firmware(app, &f.admin, &ap, &f.new.1).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["image"], f.new.1.as_str());
    assert_eq!(second.body["upgrade_operation"]["status"], "in-progress");
    assert_ne!(second.body["upgrade_operation"]["id"], first_op.as_str());
    let superseded = app
        .get(&format!("{FW}/upgrade-operation/{first_op}/"), &f.admin)
        .await;
    assert_eq!(
        superseded.body["status"], "aborted",
        "{:?}",
        superseded.body
    );

    let patched = app
        .call(
            "PATCH",
            &firmware_path(&ap),
            Some(&f.admin),
            Some(json!({"image": f.old.1})),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    let ops = app
        .get(&format!("{FW}/device/{ap}/upgrade-operation/"), &f.admin)
        .await;
    assert_eq!(ops.body["count"], 3);
    assert_eq!(ops.body["results"][0]["status"], "in-progress");
    let running = app
        .get(
            &format!("{FW}/device/{ap}/upgrade-operation/?status=in-progress"),
            &f.admin,
        )
        .await;
    assert_eq!(running.body["count"], 1);

    let bare = device(app, &f.admin, &f.acme, "ap2", SIM_BOARD).await;
    let patch_missing = app
        .call(
            "PATCH",
            &firmware_path(&bare),
            Some(&f.admin),
            Some(json!({"image": f.old.1})),
        )
        .await;
    assert_eq!(patch_missing.status, 404);
    assert_eq!(app.get(&firmware_path(&bare), &f.admin).await.status, 404);

    let deleted = app
        .call("DELETE", &firmware_path(&ap), Some(&f.admin), None)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&firmware_path(&ap), &f.admin).await.status, 404);
}

#[tokio::test]
async fn device_firmware_checks_model_activation_tenancy_and_permissions() {
    let f = fleet().await;
    let app = &f.app;
    let archer = device(app, &f.admin, &f.acme, "archer", "TP-Link Archer C7 v5").await;
    let mismatch = put_firmware(app, &f.admin, &archer, &f.old.1).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(
        mismatch.body,
        json!({"image": ["Device model and image model do not match"]})
    );

    let missing = app
        .call(
            "PUT",
            &firmware_path(&archer),
            Some(&f.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(missing.body, json!({"image": ["This field is required."]}));

    // An image of another organization's category does not exist for this device.
    let beta_category = category(app, &f.app.admin_token, &f.beta, "Beta").await;
    let (_, beta_image) = build(app, &f.app.admin_token, &beta_category, "9.0").await;
    let ap = device(app, &f.admin, &f.acme, "ap1", SIM_BOARD).await;
    let foreign = put_firmware(app, &f.app.admin_token, &ap, &beta_image).await;
    assert_eq!(
        foreign.body,
        json!({"image": [format!("Invalid pk \"{beta_image}\" - object does not exist.")]})
    );

    let operator = put_firmware(app, &f.operator, &ap, &f.old.1).await;
    assert_eq!(operator.status, 403, "operators only view firmware");
    let other_tenant = put_firmware(app, &f.beta_admin, &ap, &f.old.1).await;
    assert_eq!(other_tenant.status, 404);
    assert_eq!(other_tenant.body["detail"], "Not found.");

    assert_eq!(put_firmware(app, &f.admin, &ap, &f.old.1).await.status, 201);
    assert_eq!(
        app.get(&firmware_path(&ap), &f.operator).await.status,
        200,
        "operators may view"
    );
    assert_eq!(
        app.get(&firmware_path(&ap), &f.beta_admin).await.status,
        404
    );

    let deactivated = app
        .post(
            &format!("/api/v1/controller/device/{ap}/deactivate/"),
            &f.admin,
            json!({}),
        )
        .await;
    assert_eq!(deactivated.status, 200, "{:?}", deactivated.body);
    let refused = put_firmware(app, &f.admin, &ap, &f.new.1).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body,
        json!({"detail": "Firmware upgrades are not allowed for deactivated devices."})
    );
}

#[tokio::test]
async fn operations_filter_show_and_cancel_once() {
    let f = fleet().await;
    let app = &f.app;
    let a = device(app, &f.admin, &f.acme, "ap1", SIM_BOARD).await;
    let b = device(app, &f.admin, &f.acme, "ap2", SIM_BOARD).await;
    let op_a = put_firmware(app, &f.admin, &a, &f.old.1).await.body["upgrade_operation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    put_firmware(app, &f.admin, &b, &f.new.1).await;
    put_firmware(app, &f.admin, &b, &f.old.1).await;

    let list = |query: &str| format!("{FW}/upgrade-operation/{query}");
    let count = |reply: &Reply| reply.body["count"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(count(&app.get(&list(""), &f.admin).await), 3);
    assert_eq!(
        count(&app.get(&list(&format!("?device={b}")), &f.admin).await),
        2
    );
    assert_eq!(
        count(
            &app.get(&list(&format!("?image={}", f.old.1)), &f.admin)
                .await
        ),
        2
    );
    assert_eq!(
        count(&app.get(&list("?status=in-progress"), &f.admin).await),
        2
    );
    assert_eq!(count(&app.get(&list("?status=aborted"), &f.admin).await), 1);
    let org = format!("?device__organization={}", f.acme);
    assert_eq!(count(&app.get(&list(&org), &f.admin).await), 3);
    assert_eq!(
        count(
            &app.get(&list("?device__organization__slug=acme"), &f.admin)
                .await
        ),
        3
    );
    assert_eq!(
        count(
            &app.get(&list("?device__organization_slug=beta"), &f.admin)
                .await
        ),
        0
    );
    assert_eq!(count(&app.get(&list(""), &f.beta_admin).await), 0);
    assert_eq!(
        count(&app.get(&list(""), &f.operator).await),
        3,
        "operators view operations"
    );

    let invalid = app.get(&list("?status=done"), &f.admin).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.body,
        json!({"status": ["Select a valid choice. done is not one of the available choices."]})
    );
    let bad_device = app.get(&list("?device=nope"), &f.admin).await;
    assert_eq!(bad_device.status, 400);

    let detail = app.get(&list(&format!("{op_a}/")), &f.admin).await;
    assert_eq!(detail.status, 200);
    for key in [
        "id", "device", "image", "batch", "status", "log", "progress", "flagged", "wave",
        "created", "modified",
    ] {
        assert!(detail.body.get(key).is_some(), "{key} missing");
    }
    let no_slash = app.get(&list(&op_a), &f.admin).await;
    assert_eq!(no_slash.status, 200);
    assert_eq!(no_slash.body["id"], op_a.as_str());
    assert_eq!(
        app.get(&list(&format!("{op_a}/")), &f.beta_admin)
            .await
            .status,
        404
    );

    let cancel = list(&format!("{op_a}/cancel/"));
    assert_eq!(
        app.post(&cancel, &f.operator, json!({})).await.status,
        403,
        "operators cannot cancel"
    );
    assert_eq!(
        app.post(&cancel, &f.beta_admin, json!({})).await.status,
        404
    );
    let cancelled = app.post(&cancel, &f.admin, json!({})).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = app.post(&cancel, &f.admin, json!({})).await;
    assert_eq!(again.status, 409);
    assert!(
        again.str("error").starts_with("Cannot cancel upgrade"),
        "{:?}",
        again.body
    );
    let unknown = list(&format!("{}/cancel/", uuid::Uuid::new_v4()));
    assert_eq!(app.post(&unknown, &f.admin, json!({})).await.status, 404);
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn mass_upgrades_follow_openwisps_rules() {
    let f = fleet().await;
    let app = &f.app;
    let on_old = device(app, &f.admin, &f.acme, "on-old", SIM_BOARD).await;
    let on_new = device(app, &f.admin, &f.acme, "on-new", SIM_BOARD).await;
    let off = device(app, &f.admin, &f.acme, "deactivated", SIM_BOARD).await;
    // Not listed: its model fits no image of the build.
    device(app, &f.admin, &f.acme, "wrong", "TP-Link Archer C7 v5").await;
    let bare = device(app, &f.admin, &f.acme, "bare", SIM_BOARD).await;
    let elsewhere = device(app, &f.admin, &f.acme, "elsewhere", SIM_BOARD).await;
    let other_category = category(app, &f.admin, &f.acme, "Other").await;
    let (_, other_image) = build(app, &f.admin, &other_category, "7.0").await;
    for (dev, image) in [
        (&on_old, &f.old.1),
        (&on_new, &f.new.1),
        (&off, &f.old.1),
        (&elsewhere, &other_image),
    ] {
        assert_eq!(put_firmware(app, &f.admin, dev, image).await.status, 201);
    }
    app.post(
        &format!("/api/v1/controller/device/{off}/deactivate/"),
        &f.admin,
        json!({}),
    )
    .await;
    // Another organization's firmware-less device is out of reach.
    device(app, &f.beta_admin, &f.beta, "beta-bare", SIM_BOARD).await;

    let upgrade = format!("{FW}/build/{}/upgrade/", f.new.0);
    let dry = app.get(&upgrade, &f.operator).await;
    assert_eq!(dry.status, 200, "{:?}", dry.body);
    assert_eq!(
        ids(&dry.body["device_firmwares"], "device"),
        vec![on_old.clone()]
    );
    assert_eq!(dry.body["device_firmwares"][0]["image"], f.old.1.as_str());
    assert_eq!(ids(&dry.body["devices"], "id"), vec![bare.clone()]);
    assert_eq!(dry.body["devices"][0]["model"], SIM_BOARD);

    assert_eq!(app.post(&upgrade, &f.operator, json!({})).await.status, 403);
    let other_tenant = app.post(&upgrade, &f.beta_admin, json!({})).await;
    assert_eq!(other_tenant.status, 404);

    // Without upgrade_all only device firmwares are upgraded.
    let first = app.post(&upgrade, &f.admin, json!({})).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let first = first.str("batch");
    let detail = app
        .get(&format!("{FW}/batch-upgrade-operation/{first}/"), &f.admin)
        .await;
    assert_eq!(detail.status, 200, "{:?}", detail.body);
    assert_eq!(
        ids(&detail.body["upgrade_operations"], "device"),
        vec![on_old.clone()]
    );
    assert_eq!(
        detail.body["upgrade_operations"][0]["batch"],
        first.as_str()
    );
    assert_eq!(
        detail.body["upgrade_operations"][0]["image"],
        f.new.1.as_str()
    );

    // The device firmware now points at this build: nothing is left without upgrade_all.
    let nothing = app.post(&upgrade, &f.admin, json!({})).await;
    assert_eq!(nothing.status, 400);
    assert_eq!(
        nothing.body,
        json!({"error": "No devices found matching the specified filters. Please adjust the filters and try again."})
    );

    let all = app
        .post(
            &upgrade,
            &f.admin,
            json!({"upgrade_all": true, "max_parallel": 2, "rate_per_minute": 30,
                   "waves": [50, 100], "abort_threshold": {"failure_rate": 0.5, "min_sample": 4}}),
        )
        .await;
    assert_eq!(all.status, 201, "{:?}", all.body);
    let second = all.str("batch");
    let detail = app
        .get(&format!("{FW}/batch-upgrade-operation/{second}/"), &f.admin)
        .await;
    assert_eq!(
        ids(&detail.body["upgrade_operations"], "device"),
        vec![bare.clone()]
    );
    assert_eq!(detail.body["build"], f.new.0.as_str());
    assert_eq!(detail.body["status"], "in-progress");
    assert_eq!(detail.body["progress_report"], "0 out of 1");
    assert_eq!(detail.body["total"], 1);
    assert_eq!(
        detail.body["status_counts"],
        json!({"in-progress": 1, "success": 0, "failed": 0, "aborted": 0, "cancelled": 0})
    );
    assert_eq!(detail.body["success_rate"], 0);
    assert_eq!(detail.body["upgrade_operations_count"], 1);
    assert_eq!(
        detail.body["rollout"],
        json!({"max_parallel": 2, "rate_per_minute": 30, "waves": [50, 100],
               "abort_threshold": {"failure_rate": 0.5, "min_sample": 4}})
    );

    let batches = format!("{FW}/batch-upgrade-operation/");
    let count = |reply: Reply| reply.body["count"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(count(app.get(&batches, &f.admin).await), 2);
    assert_eq!(
        count(
            app.get(&format!("{batches}?build={}", f.new.0), &f.admin)
                .await
        ),
        2
    );
    assert_eq!(
        count(
            app.get(&format!("{batches}?build={}", f.old.0), &f.admin)
                .await
        ),
        0
    );
    assert_eq!(
        count(
            app.get(&format!("{batches}?status=in-progress"), &f.operator)
                .await
        ),
        2
    );
    assert_eq!(count(app.get(&batches, &f.beta_admin).await), 0);
    assert_eq!(
        app.get(&format!("{batches}{second}/"), &f.beta_admin)
            .await
            .status,
        404
    );
    let of_batch = app
        .get(&format!("{FW}/upgrade-operation/?batch={second}"), &f.admin)
        .await;
    assert_eq!(ids(&of_batch.body["results"], "device"), vec![bare.clone()]);
    let invalid = app.get(&format!("{batches}?status=paused"), &f.admin).await;
    assert_eq!(
        invalid.body,
        json!({"status": ["Select a valid choice. paused is not one of the available choices."]})
    );

    let cancel = format!("{batches}{second}/cancel/");
    assert_eq!(app.post(&cancel, &f.operator, json!({})).await.status, 403);
    let cancelled = app.post(&cancel, &f.admin, json!({})).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["progress_report"], "1 out of 1");
    assert_eq!(cancelled.body["cancelled_rate"], 100);
    assert_eq!(
        cancelled.body["upgrade_operations"][0]["status"],
        "cancelled"
    );
    assert_eq!(
        count(
            app.get(&format!("{batches}?status=cancelled"), &f.admin)
                .await
        ),
        1
    );
}

#[tokio::test]
async fn mass_upgrade_options_are_validated_field_by_field() {
    let f = fleet().await;
    let app = &f.app;
    let upgrade = format!("{FW}/build/{}/upgrade/", f.new.0);
    let refused = app
        .post(
            &upgrade,
            &f.admin,
            json!({"upgrade_all": true, "max_parallel": 0, "rate_per_minute": "fast",
                   "waves": [50, 10], "abort_threshold": {"failure_rate": 2}}),
        )
        .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(
        refused.body["max_parallel"],
        json!(["Ensure this value is greater than or equal to 1."])
    );
    assert_eq!(
        refused.body["rate_per_minute"],
        json!(["A valid integer is required."])
    );
    assert_eq!(
        refused.body["waves"],
        json!(["Waves must be in strictly ascending order."])
    );
    assert!(
        refused.body["abort_threshold"]["failure_rate"].is_array(),
        "{:?}",
        refused.body
    );
    assert_eq!(
        refused.body["abort_threshold"]["min_sample"],
        json!(["This field is required."])
    );
    let last = app
        .post(&upgrade, &f.admin, json!({"waves": [10, 50]}))
        .await;
    assert_eq!(last.body, json!({"waves": ["The last wave must be 100."]}));
    let range = app
        .post(&upgrade, &f.admin, json!({"waves": [0, 100]}))
        .await;
    assert_eq!(
        range.body,
        json!({"waves": ["Each wave must be an integer from 1 to 100."]})
    );
    let not_list = app.post(&upgrade, &f.admin, json!({"waves": 5})).await;
    assert_eq!(
        not_list.body,
        json!({"waves": ["Expected a list of items but got type \"int\"."]})
    );

    let group = uuid::Uuid::new_v4();
    let unknown_group = app
        .post(
            &upgrade,
            &f.admin,
            json!({"upgrade_all": true, "group": group}),
        )
        .await;
    assert_eq!(
        unknown_group.body,
        json!({"group": [format!("Invalid pk \"{group}\" - object does not exist.")]})
    );
    let location = uuid::Uuid::new_v4();
    let unknown_location = app
        .get(&format!("{upgrade}?location={location}"), &f.admin)
        .await;
    assert_eq!(
        unknown_location.body,
        json!({"location": [format!("Invalid pk \"{location}\" - object does not exist.")]})
    );
    assert_eq!(
        app.get(
            &format!("{FW}/build/{}/upgrade/", uuid::Uuid::new_v4()),
            &f.admin
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn the_batch_list_filters_by_organization_slug_and_a_foreign_one_matches_nothing() {
    let f = fleet().await;
    let app = &f.app;
    device(app, &f.admin, &f.acme, "acme-ap", SIM_BOARD).await;
    let acme_batch = app
        .post(
            &format!("{FW}/build/{}/upgrade/", f.new.0),
            &f.admin,
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(acme_batch.status, 201, "{:?}", acme_batch.body);
    let beta_category = category(app, &f.beta_admin, &f.beta, "Switches").await;
    let (beta_build, _) = build(app, &f.beta_admin, &beta_category, "1.0").await;
    device(app, &f.beta_admin, &f.beta, "beta-ap", SIM_BOARD).await;
    let beta_batch = app
        .post(
            &format!("{FW}/build/{beta_build}/upgrade/"),
            &f.beta_admin,
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(beta_batch.status, 201, "{:?}", beta_batch.body);

    let batches = format!("{FW}/batch-upgrade-operation/");
    let listed = |reply: Reply| {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            reply.body["count"].as_u64(),
            reply.body["results"].as_array().map(|r| r.len() as u64)
        );
        ids(&reply.body["results"], "id")
    };
    let superuser = &app.admin_token;
    assert_eq!(listed(app.get(&batches, superuser).await).len(), 2);
    assert_eq!(
        listed(
            app.get(&format!("{batches}?organization=acme"), superuser)
                .await
        ),
        vec![acme_batch.str("batch")]
    );
    assert_eq!(
        listed(
            app.get(&format!("{batches}?organization=beta"), superuser)
                .await
        ),
        vec![beta_batch.str("batch")]
    );
    assert_eq!(
        listed(
            app.get(&format!("{batches}?organization=acme"), &f.admin)
                .await
        ),
        vec![acme_batch.str("batch")]
    );
    // Another tenant's slug, or one nobody has, lists nothing rather than failing.
    assert!(
        listed(
            app.get(&format!("{batches}?organization=beta"), &f.admin)
                .await
        )
        .is_empty()
    );
    assert!(
        listed(
            app.get(&format!("{batches}?organization=nowhere"), &f.admin)
                .await
        )
        .is_empty()
    );
}

#[tokio::test]
async fn image_types_are_listed_to_firmware_viewers_and_managed_by_superusers() {
    let f = fleet().await;
    let app = &f.app;
    let types = format!("{FW}/image-type/");
    let list = app.get(&types, &f.operator).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let sim = list
        .body
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == SIM_TYPE)
        .cloned()
        .expect("the simulator's type");
    assert_eq!(sim["boards"], json!([SIM_BOARD]));
    assert_eq!(sim["builtin"], true);

    let custom = json!({"name": "acme-custom-sysupgrade.bin", "label": "Acme custom",
                        "boards": ["Acme Board v1"]});
    assert_eq!(app.post(&types, &f.admin, custom.clone()).await.status, 403);
    let created = app.post(&types, &app.admin_token, custom.clone()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body,
        json!({"name": "acme-custom-sysupgrade.bin", "label": "Acme custom",
               "boards": ["Acme Board v1"], "builtin": false})
    );
    let twice = app.post(&types, &app.admin_token, custom).await;
    assert_eq!(twice.status, 400);
    assert!(twice.body["name"].is_array());
    let no_boards = app
        .post(
            &types,
            &app.admin_token,
            json!({"name": "x.bin", "boards": []}),
        )
        .await;
    assert_eq!(no_boards.status, 400);
    assert!(no_boards.body["boards"].is_array());

    let unknown = upload(app, &f.admin, &f.old.0, "nope.bin", vec![1, 2, 3]).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.body,
        json!({"type": ["\"nope.bin\" is not a valid choice."]})
    );
    let known = upload(
        app,
        &f.admin,
        &f.old.0,
        "acme-custom-sysupgrade.bin",
        vec![1, 2, 3],
    )
    .await;
    assert_eq!(known.status, 201, "{:?}", known.body);

    // A device of the new type's board can be given the image.
    let board = device(app, &f.admin, &f.acme, "custom", "Acme Board v1").await;
    let put = put_firmware(app, &f.admin, &board, &known.str("id")).await;
    assert_eq!(put.status, 201, "{:?}", put.body);

    let builtin = app
        .call(
            "DELETE",
            &format!("{types}{SIM_TYPE}/"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(builtin.status, 403);
    assert!(builtin.str("detail").contains("Built-in"));
    let path = format!("{types}acme-custom-sysupgrade.bin/");
    assert_eq!(
        app.call("DELETE", &path, Some(&f.admin), None).await.status,
        403
    );
    assert_eq!(
        app.call("DELETE", &path, Some(&app.admin_token), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.call("DELETE", &path, Some(&app.admin_token), None)
            .await
            .status,
        404
    );
}

/// Waits for the rollout engine's `images/fetch` request on the device's MQTT session.
async fn fetch_url(client: &mut MqttClient) -> String {
    loop {
        let publish = client.next_publish().await;
        if let Ok(request) = UpdateRequest::parse(&publish.payload)
            && let fleetmq_protocol::Call::FetchImage { url } = request.call
        {
            return url;
        }
    }
}

#[tokio::test]
async fn devices_download_their_image_with_the_signed_link_and_nothing_else() {
    let f = fleet().await;
    let app = &f.app;
    let id = device(app, &f.admin, &f.acme, "ap1", SIM_BOARD).await;
    let key = app
        .get(&format!("/api/v1/controller/device/{id}/"), &f.admin)
        .await
        .str("key");
    let identity = DeviceIdentity {
        id: id.clone(),
        key,
        org: "acme".to_owned(),
    };
    let mut client = MqttClient::device(
        app.mqtt_addr,
        &identity,
        r#"{"status":"online","model":"sim-board"}"#,
    )
    .await;
    client
        .subscribe(&[&identity.down(DownChannel::UpdateRequest)])
        .await;
    assert_eq!(put_firmware(app, &f.admin, &id, &f.new.1).await.status, 201);
    let url = fetch_url(&mut client).await;
    let path = url
        .find("/api/")
        .map(|at| url[at..].to_owned())
        .expect("an API path");
    assert!(
        path.starts_with(&format!(
            "{FW}/build/{}/image/{}/download/?",
            f.new.0, f.new.1
        )),
        "{path}"
    );

    let response = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-firmware-version"], "2.0");
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        b"firmware 2.0"
    );
    let range = app
        .http
        .get(format!("{}{path}", app.base))
        .header("range", "bytes=9-")
        .send()
        .await
        .expect("sent");
    assert_eq!(range.status().as_u16(), 206);
    assert_eq!(range.bytes().await.expect("bytes").as_ref(), b"2.0");

    // Another image of the same device, a forged signature, a moved expiry: refused.
    let other_image = path.replace(&f.new.1, &f.old.1).replace(&f.new.0, &f.old.0);
    let tampered = {
        let (head, signature) = path.rsplit_once("signature=").expect("signature");
        let flipped = if signature.starts_with('0') { "1" } else { "0" };
        format!("{head}signature={flipped}{}", &signature[1..])
    };
    let expires = {
        let start = path.find("expires=").expect("expires") + "expires=".len();
        let end = path[start..].find('&').map_or(path.len(), |e| start + e);
        let value: i64 = path[start..end].parse().expect("a number");
        format!("{}{}{}", &path[..start], value + 3600, &path[end..])
    };
    for forged in [other_image, tampered, expires] {
        let reply = app.call("GET", &forged, None, None).await;
        assert_eq!(reply.status, 403, "{forged}: {:?}", reply.body);
        assert!(reply.body["detail"].is_string());
    }
    let expired = format!(
        "{FW}/build/{}/image/{}/download/?device={id}&expires=1&signature=00",
        f.new.0, f.new.1
    );
    assert_eq!(app.call("GET", &expired, None, None).await.status, 403);
    let bare = format!("{FW}/build/{}/image/{}/download/", f.new.0, f.new.1);
    let anonymous = app.call("GET", &bare, None, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.body["detail"],
        "Authentication credentials were not provided."
    );
    let with_token = app
        .http
        .get(format!("{}{bare}", app.base))
        .bearer_auth(&f.admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(with_token.status().as_u16(), 200);
    assert_eq!(with_token.headers()["x-firmware-version"], "2.0");
}

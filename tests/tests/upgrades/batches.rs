//! Batches: a fleet with injected faults ends with exactly the expected statuses; abort
//! thresholds, waves, parallelism limits and batch cancel; a batch's progress on the live
//! event stream.

use std::collections::HashMap;
use std::time::Duration;

use fleetmq_sim::{Fault, SimEvent, SimHandle};
use fleetmq_tests::events::EventStream;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Setup, setup};

async fn start_batch(s: &Setup, body: Value) -> String {
    let reply = s
        .app
        .post(
            &format!("/api/v1/firmware-upgrader/build/{}/upgrade/", s.build),
            &s.admin,
            body,
        )
        .await;
    assert_eq!(reply.status, 201, "{:#}", reply.body);
    reply.str("batch")
}

async fn batch_done(s: &Setup, batch: &str) -> Value {
    s.until(
        &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"),
        |r| r.status == 200 && !["in-progress", "idle"].contains(&r.str("status").as_str()),
    )
    .await
    .body
}

/// Every operation of a device, newest first.
async fn operations_of(s: &Setup, device: &str) -> Vec<Value> {
    let reply = s
        .app
        .get(
            &format!("/api/v1/firmware-upgrader/device/{device}/upgrade-operation/"),
            &s.admin,
        )
        .await;
    assert_eq!(reply.status, 200, "{:#}", reply.body);
    reply.body["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_200_devices_with_injected_faults_ends_with_exactly_the_expected_statuses() {
    let s = setup("3.0.0").await;
    let devices = s.devices("ap", 200).await;
    // (fault, how many, expected status, expected flagged)
    let plan: [(Option<Fault>, usize, &str, bool); 8] = [
        (Some(Fault::ChecksumMismatch), 20, "failed", false),
        (
            Some(Fault::DownloadError { failures: 1 }),
            20,
            "success",
            false,
        ),
        (
            Some(Fault::DownloadError { failures: 99 }),
            10,
            "failed",
            false,
        ),
        (Some(Fault::FailedGraceful), 20, "failed", false),
        (Some(Fault::FailedCritical), 10, "failed", true),
        (Some(Fault::Hang), 10, "failed", false),
        (
            Some(Fault::Offline {
                for_: Duration::from_secs(2),
            }),
            20,
            "success",
            false,
        ),
        (None, 90, "success", false),
    ];
    let mut expected = Vec::new();
    let mut sims: Vec<SimHandle> = Vec::new();
    let mut next = devices.iter();
    for (fault, count, status, flagged) in plan {
        for device in next.by_ref().take(count) {
            sims.push(s.start(device, fault));
            expected.push((device.id.clone(), status, flagged));
        }
    }
    // Everyone but the offline ones (devices 90..110) is connected before the batch starts.
    for (i, sim) in sims.iter_mut().enumerate() {
        if !(90..110).contains(&i) {
            sim.connected().await.expect("device connects");
        }
    }

    let batch = start_batch(&s, json!({"upgrade_all": true})).await;
    let done = batch_done(&s, &batch).await;
    // Each device first: a wrong count is explained by the operations' logs.
    let mut wrong = Vec::new();
    for (device, status, flagged) in &expected {
        let ops = operations_of(&s, device).await;
        let [op] = ops.as_slice() else {
            wrong.push(format!("{device}: {} operations", ops.len()));
            continue;
        };
        if op["status"] != *status || op["flagged"] != *flagged {
            wrong.push(format!(
                "{device}: expected {status} (flagged {flagged}), got {} (flagged {}): {}",
                op["status"], op["flagged"], op["log"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["progress_report"], "200 out of 200");
    assert_eq!(
        done["status_counts"],
        json!({"in-progress": 0, "success": 130, "failed": 70, "aborted": 0, "cancelled": 0})
    );
    assert_eq!(done["success_rate"], 65);
    assert_eq!(done["failed_rate"], 35);
    // Retried downloads say so in the log.
    let retried = operations_of(&s, &expected[20].0).await;
    assert!(
        retried[0]["log"]
            .as_str()
            .unwrap_or("")
            .contains("retry 1 of 2"),
        "{:#}",
        retried[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_threshold_stops_the_remaining_operations_and_fails_the_batch() {
    let s = setup("3.0.1").await;
    let devices = s.devices("ap", 40).await;
    let mut sims = Vec::new();
    for device in &devices {
        sims.push(s.start(device, Some(Fault::FailedGraceful)));
    }
    for sim in &mut sims {
        sim.connected().await.expect("connects");
    }
    let batch = start_batch(
        &s,
        json!({"upgrade_all": true, "max_parallel": 4,
               "abort_threshold": {"failure_rate": 0.5, "min_sample": 5}}),
    )
    .await;
    let done = batch_done(&s, &batch).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let counts = &done["status_counts"];
    let failed = counts["failed"].as_u64().unwrap_or(0);
    let aborted = counts["aborted"].as_u64().unwrap_or(0);
    assert_eq!(counts["success"], 0);
    // The threshold trips at the 5th failure; at most the other 3 running ones end after it.
    assert!((5..=8).contains(&failed), "{done:#}");
    assert_eq!(failed + aborted, 40, "{done:#}");
    assert!(
        done["note"]
            .as_str()
            .unwrap_or("")
            .contains("abort threshold"),
        "{done:#}"
    );
}

/// When each device was first asked to fetch and when it installed. Hands the device back
/// (dropping its handle would stop it before it reconnects on the new firmware).
async fn timeline(mut sim: SimHandle) -> (Option<Instant>, Option<Instant>, SimHandle) {
    let mut fetched = None;
    loop {
        match sim.next_event().await {
            Some(SimEvent::UpdateRequest { path, .. }) if path == "images/fetch" => {
                fetched.get_or_insert_with(Instant::now);
            }
            Some(SimEvent::Installed { .. }) => return (fetched, Some(Instant::now()), sim),
            Some(_) => {}
            None => return (fetched, None, sim),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_start_after_the_canary_and_parallelism_stays_within_the_limit() {
    let s = setup("3.0.2").await;
    let devices = s.devices("ap", 20).await;
    let mut timelines = Vec::new();
    for device in &devices {
        let mut sim = s.start(device, None);
        sim.connected().await.expect("connects");
        timelines.push(tokio::spawn(timeline(sim)));
    }
    let batch = start_batch(
        &s,
        json!({"upgrade_all": true, "max_parallel": 3, "waves": [10, 100]}),
    )
    .await;
    let mut spans = Vec::new();
    let mut sims = Vec::new();
    for timeline in timelines {
        let (fetched, installed, sim) = timeline.await.expect("timeline task");
        sims.push(sim);
        spans.push((
            fetched.expect("every device was asked to fetch"),
            installed.expect("every device installed"),
        ));
    }
    let done = batch_done(&s, &batch).await;
    assert_eq!(done["status"], "success", "{done:#}");
    // Each operation says its wave: 2 in the canary, the other 18 in the second.
    let mut per_wave = [0, 0];
    for op in done["upgrade_operations"].as_array().expect("operations") {
        match op["wave"].as_u64() {
            Some(0) => per_wave[0] += 1,
            Some(1) => per_wave[1] += 1,
            other => panic!("an operation in wave {other:?}: {op:#}"),
        }
    }
    assert_eq!(per_wave, [2, 18]);
    spans.sort();
    // Canary: 10 % of 20 = the first 2 devices, all installed before anyone else fetched.
    let canary_end = spans[..2].iter().map(|s| s.1).max().expect("canary");
    assert!(
        spans[2..].iter().all(|s| s.0 > canary_end),
        "a device of the second wave started before the canary ended"
    );
    // Never more than 3 devices between fetch and install at once.
    let mut points: Vec<(Instant, i32)> = spans
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    points.sort_by_key(|(t, d)| (*t, *d));
    let mut running = 0;
    let mut peak = 0;
    for (_, delta) in points {
        running += delta;
        peak = peak.max(running);
    }
    assert!(peak <= 3, "{peak} devices upgraded at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_batch_cancels_every_operation_that_has_not_begun_flashing() {
    let s = setup("3.0.3").await;
    let devices = s.devices("ap", 6).await;
    let mut sims = Vec::new();
    for device in &devices {
        let mut sim = s.start(device, Some(Fault::Hang));
        sim.connected().await.expect("connects");
        sims.push(sim);
    }
    let batch = start_batch(&s, json!({"upgrade_all": true})).await;
    let cancel = s
        .app
        .post(
            &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/cancel/"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{:#}", cancel.body);
    assert_eq!(cancel.str("status"), "cancelled", "{:#}", cancel.body);
    assert_eq!(cancel.body["status_counts"]["cancelled"], 6);
    let mut statuses = HashMap::new();
    for device in &devices {
        for op in operations_of(&s, &device.id).await {
            *statuses.entry(op["status"].to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(statuses, HashMap::from([("\"cancelled\"".to_owned(), 6)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_back_operations_beyond_the_per_minute_budget() {
    let s = setup("3.0.4").await;
    let devices = s.devices("ap", 8).await;
    let mut sims = Vec::new();
    for device in &devices {
        let mut sim = s.start(device, None);
        sim.connected().await.expect("connects");
        sims.push(sim);
    }
    let batch = start_batch(&s, json!({"upgrade_all": true, "rate_per_minute": 5})).await;
    let path = format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/");
    let five = s
        .until(&path, |r| r.body["status_counts"]["success"] == 5)
        .await;
    assert_eq!(
        five.body["status_counts"]["in-progress"], 3,
        "{:#}",
        five.body
    );
    // The other three wait for the next minute without having been dispatched.
    let mut waiting = 0;
    for device in &devices {
        for op in operations_of(&s, &device.id).await {
            if op["status"] == "in-progress" {
                assert_eq!(op["progress"], 0, "{op:#}");
                waiting += 1;
            }
        }
    }
    assert_eq!(waiting, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_streams_its_progress_to_its_organization_and_no_other() {
    let s = setup("3.0.4").await;
    let other = s.app.create_org("other").await;
    let bob = s.app.create_user("bob", &["Operator"], &[&other]).await;
    let devices = s.devices("ap", 3).await;
    let mut sims = Vec::new();
    for device in &devices {
        let mut sim = s.start(device, None);
        sim.connected().await.expect("connects");
        sims.push(sim);
    }
    let mut ada = EventStream::open(&s.app, &s.admin).await;
    let mut bobs = EventStream::open(&s.app, &bob).await;

    let batch = start_batch(&s, json!({"upgrade_all": true})).await;
    // Every event is of this batch and its counts add up; the last one is its end.
    let mut seen = Vec::new();
    let last = loop {
        let event = ada.next_named("batch").await;
        assert_eq!(event["batch"], batch.as_str(), "{event:#}");
        assert_eq!(event["organization"], s.org_id.as_str());
        assert_eq!(event["total"], 3);
        let counts = &event["status_counts"];
        let sum: u64 = ["in-progress", "success", "failed", "aborted", "cancelled"]
            .iter()
            .filter_map(|status| counts[status].as_u64())
            .sum();
        assert_eq!(sum, 3, "{event:#}");
        seen.push(event["status"].as_str().unwrap_or_default().to_owned());
        if event["status"] != "in-progress" {
            break event;
        }
    };
    assert_eq!(
        seen.first().map(String::as_str),
        Some("in-progress"),
        "{seen:?}"
    );
    assert_eq!(last["status"], "success", "{last:#}");
    assert_eq!(
        last["status_counts"],
        json!({"in-progress": 0, "success": 3, "failed": 0, "aborted": 0, "cancelled": 0})
    );
    let detail = batch_done(&s, &batch).await;
    assert_eq!(detail["status_counts"], last["status_counts"]);

    // Bob's first event is the presence of his own organization's device, which connects only
    // now: none of the batch's events came before it.
    let reply = s
        .app
        .create_device(&s.app.admin_token, &other, "bobs-ap")
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let bobs_device = fleetmq_tests::mqtt::DeviceIdentity {
        id: reply.str("id"),
        key: reply.str("key"),
        org: "other".to_owned(),
    };
    let _bobs_sim = s.start(&bobs_device, None);
    let (name, data) = bobs.next().await.expect("bob's stream goes on");
    assert_eq!(
        (name.as_str(), &data["device"]),
        ("presence", &json!(bobs_device.id))
    );
}

//! Rollouts from the console: 50 simulated devices upgraded in two waves, watched to success
//! on the rollout's page without a reload; a second rollout cancelled; the history.

use std::time::Duration;

use crate::{Browser, Tenant};
use fleetmq_tests::firmware::{sim_build, sim_firmware};

/// A batch of 50 upgrades on a loaded CI machine.
const ROLLOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_in_two_waves_reaches_success_live_and_a_second_is_cancelled() {
    let app = crate::spawn().await;
    let a = Tenant::create(&app, "org-a", 50).await;
    let (first_build, _, _) = sim_firmware(&app, &a.token, &a.org, "2.0.0").await;
    let category = app
        .get(
            &format!("/api/v1/firmware-upgrader/build/{first_build}/"),
            &a.token,
        )
        .await
        .str("category");
    let (second_build, _, _) = sim_build(&app, &a.token, &category, "3.0.0").await;
    let sims = a.connect_all(&app).await;

    let mut browser = Browser::open(&app, "rollouts").await;
    browser.log_in(&a.operator).await;
    browser.go("/rollouts/").await;
    browser.choose("#build", &first_build).await;
    // The devices have no firmware record yet: the rollout includes devices without one
    // whose model fits an image of the build.
    browser.click("#upgrade-all").await;
    browser.click("#preview").await;
    // The preview is shown once the dry run has answered.
    browser
        .wait_for("#dry-run:not(.hidden):not([aria-busy]) #dry-run-count")
        .await;
    assert_eq!(
        browser.text("#dry-run-count").await,
        "50",
        "the dry run lists the 50 devices"
    );
    assert_eq!(browser.count("#dry-run-table tr[data-device-id]").await, 50);
    browser.type_into("#waves", "50, 100").await;
    browser.shot("rollout-preview").await;
    browser.click("#start").await;
    browser.accept_dialog().await;

    // The rollout's own page, watched to the end without a reload.
    browser.wait_for("#batch-status").await;
    browser.mark_document().await;
    browser.shot("rollout-started").await;
    browser
        .wait_for_within("#batch-status[data-status=\"success\"]", ROLLOUT)
        .await;
    assert!(browser.same_document().await, "the page was reloaded");
    let counts = browser.text("#counts").await;
    assert!(counts.contains("50"), "50 successes shown: {counts}");
    // Two waves of 25, each ended, each bar all success.
    assert_eq!(browser.count("#waves .wave[data-state=\"done\"]").await, 2);
    let first_wave = browser.text("#waves .wave[data-wave=\"0\"]").await;
    assert!(first_wave.contains("devices 1–25"), "{first_wave}");
    assert_eq!(browser.count("#waves .wave .bar span.success").await, 2);
    browser.shot("rollout-success").await;
    browser.check_phone_width("rollout-phone").await;
    let first_batch = browser.url().await;

    // A second rollout, one upgrade a minute, cancelled from its page.
    browser.go("/rollouts/").await;
    browser.choose("#build", &second_build).await;
    browser.type_into("#rate", "1").await;
    browser.click("#start").await;
    browser.accept_dialog().await;
    browser
        .wait_for("#batch-status[data-status=\"in-progress\"]")
        .await;
    assert_ne!(
        browser.url().await,
        first_batch,
        "a new batch has its own page"
    );
    browser.mark_document().await;
    browser.click("#cancel").await;
    browser.accept_dialog().await;
    browser
        .wait_for("#batch-status[data-status=\"cancelled\"]")
        .await;
    assert!(browser.same_document().await, "the page was reloaded");
    browser.shot("rollout-cancelled").await;

    // Both in the history.
    browser.go("/rollouts/").await;
    browser.wait_for("#batches tr[data-batch-id]").await;
    assert_eq!(browser.count("#batches tr[data-batch-id]").await, 2);
    browser.shot("rollout-history").await;
    browser.check_phone_width("rollouts-phone").await;

    browser.close().await;
    for sim in sims {
        sim.stop().await;
    }
}

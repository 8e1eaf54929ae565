//! A device's page (its key on demand, a command's output arriving live) and the map of the
//! fleet.

use crate::{Browser, Tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_page_reveals_the_key_and_shows_a_command_output_live_and_the_map_shows_the_fleet()
{
    let app = crate::spawn().await;
    let a = Tenant::create(&app, "org-a", 3).await;
    let sims = a.connect_all(&app).await;
    // Each device reports where it is; the map shows those that did.
    for (sim, device) in sims.iter().zip(&a.devices) {
        sim.publish_coordinates_now()
            .await
            .expect("the device is connected");
        app.eventually(
            &format!("/api/v1/controller/device/{}/coordinates/", device.id),
            &a.token,
            |r| r.status == 200,
        )
        .await;
    }

    let mut browser = Browser::open(&app, "device").await;
    browser.log_in(&a.operator).await;
    let device = &a.devices[1];
    browser.go(&format!("/devices/{}/", device.id)).await;
    browser
        .wait_for("#presence-badge[data-presence=\"online\"]")
        .await;
    assert_eq!(browser.text("#device-name").await, "org-a-01");
    // Its presence history, as the server kept it: it came online before the page opened.
    browser
        .wait_for("#presence-history li[data-presence=\"online\"]")
        .await;
    assert_ne!(
        browser.text("#device-key").await,
        device.key,
        "the key shows at once"
    );
    browser.click("#reveal-key").await;
    browser
        .wait_for("#device-key[data-revealed=\"true\"]")
        .await;
    assert_eq!(browser.text("#device-key").await, device.key);

    // A custom command: its output appears in the list when the device answers.
    browser.mark_document().await;
    browser.choose("#command-type", "custom").await;
    browser
        .type_into("#command-input", "echo console-check")
        .await;
    browser.click("#command-send").await;
    let row = browser
        .wait_for("#command-list tbody tr[data-status=\"success\"] td.output")
        .await;
    let output = row.text().await.unwrap_or_default();
    assert!(output.contains("echo console-check"), "{output}");
    assert!(browser.same_document().await, "the page was reloaded");
    browser.shot("device").await;
    browser.check_phone_width("device-phone").await;

    // The map: the three devices, online.
    browser.go("/map/").await;
    browser
        .wait_for("#map[data-markers=\"3\"][data-online=\"3\"]")
        .await;
    browser.shot("map").await;
    browser.check_phone_width("map-phone").await;
    browser.go("/firmware/").await;
    browser.wait_for("#categories").await;
    browser.check_phone_width("firmware-phone").await;

    browser.close().await;
    for sim in sims {
        sim.stop().await;
    }
}

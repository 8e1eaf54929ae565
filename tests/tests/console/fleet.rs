//! The fleet view: logging in, 50 simulated devices, one going offline live, search, the
//! phone width, another organization's operator, logging out.

use crate::{Browser, Tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_fleet_live_and_logging_out_ends_the_session() {
    let app = crate::spawn().await;
    let a = Tenant::create(&app, "org-a", 50).await;
    let mut sims = a.connect_all(&app).await;

    let mut browser = Browser::open(&app, "fleet").await;
    browser.log_in(&a.operator).await;
    browser.wait_for("#devices tbody tr[data-device-id]").await;
    assert_eq!(browser.text("#summary").await, "50 devices");
    assert_eq!(browser.count("#devices tbody tr[data-device-id]").await, 50);
    // Every simulator is connected: the page shows each online (from the list, or from the
    // live stream for those whose session was recorded after the page loaded).
    browser
        .wait_for("#devices tbody:not(:has(tr[data-presence=\"offline\"]))")
        .await;
    browser.shot("fleet-online").await;

    // One simulator stops: its row turns offline without a reload.
    browser.mark_document().await;
    let stopped = sims.remove(7);
    let stopped_id = stopped.device_id().to_owned();
    stopped.stop().await;
    browser
        .wait_for(&format!(
            "tr[data-device-id=\"{stopped_id}\"][data-presence=\"offline\"]"
        ))
        .await;
    assert!(browser.same_document().await, "the page was reloaded");
    assert_eq!(
        browser
            .count("#devices tbody tr[data-presence=\"offline\"]")
            .await,
        1
    );
    browser
        .scroll_to(&format!("tr[data-device-id=\"{stopped_id}\"]"))
        .await;
    browser.shot("device-offline-live").await;

    // Ordered by name from the column header: org-a-00 first, the offline one among the first.
    browser.click("button.sort[data-field=\"name\"]").await;
    browser
        .wait_for(&format!(
            "#devices tbody tr:nth-child(1)[data-device-id=\"{}\"]",
            a.devices[0].id
        ))
        .await;
    assert!(
        browser.url().await.contains("ordering=name"),
        "{}",
        browser.url().await
    );
    browser.script("window.scrollTo(0, 0); return null;").await;
    browser.shot("fleet-by-name").await;

    // Search by part of a name, then filter by presence.
    browser
        .type_into("#filters input[name=search]", "org-a-07")
        .await;
    browser.wait_for("#summary:not(:empty)").await;
    browser
        .wait_for(&format!(
            "#devices tbody:has(tr[data-device-id=\"{stopped_id}\"]):not(:has(tr:nth-child(2)))"
        ))
        .await;
    browser.shot("search").await;
    browser.type_into("#filters input[name=search]", "").await;
    browser
        .script("const s = document.querySelector('#filters select[name=is_online]'); s.value = 'false'; s.dispatchEvent(new Event('input', {bubbles: true})); return null;")
        .await;
    browser
        .wait_for(&format!(
            "#devices tbody:has(tr[data-device-id=\"{stopped_id}\"]):not(:has(tr:nth-child(2)))"
        ))
        .await;
    assert!(
        browser.url().await.contains("is_online=false"),
        "the filter is in the address"
    );

    // A phone's width: the same page, narrower.
    browser.check_phone_width("fleet-phone").await;

    // Logging out ends the session: the login page, and the cookie no longer works.
    let cookie = browser.session_cookie().await.expect("a session cookie");
    browser.click("#logout").await;
    browser.wait_for("#login-form").await;
    browser.shot("logged-out").await;
    let answer = app
        .http
        .get(format!("{}/api/v1/controller/device/", app.base))
        .header("Cookie", format!("fleetmq_session={cookie}"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(answer.status(), 401, "the logged-out session still works");
    browser.go("/").await;
    browser.wait_for("#login-form").await;
    assert!(
        browser.url().await.contains("/login/"),
        "{}",
        browser.url().await
    );

    browser.close().await;
    for sim in sims {
        sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_organization_b_sees_none_of_organization_a() {
    let app = crate::spawn().await;
    let a = Tenant::create(&app, "org-a", 5).await;
    let b = Tenant::create(&app, "org-b", 2).await;

    let mut browser = Browser::open(&app, "tenancy").await;
    browser.log_in(&b.operator).await;
    browser.wait_for("#devices tbody tr[data-device-id]").await;
    assert_eq!(browser.text("#summary").await, "2 devices");
    for device in &b.devices {
        browser
            .wait_for(&format!("tr[data-device-id=\"{}\"]", device.id))
            .await;
    }
    for device in &a.devices {
        assert_eq!(
            browser
                .count(&format!("tr[data-device-id=\"{}\"]", device.id))
                .await,
            0,
            "org-b's operator sees org-a's device {}",
            device.id
        );
    }
    browser.shot("fleet-of-b").await;

    // Searching for A's device finds nothing; its page is not found.
    browser
        .type_into("#filters input[name=search]", "org-a-01")
        .await;
    browser.wait_for("#devices tbody td.muted").await;
    assert_eq!(browser.text("#summary").await, "0 devices");
    browser.go(&format!("/devices/{}/", a.devices[1].id)).await;
    let alert = browser.text("#messages .alert.error").await;
    assert!(
        alert.contains(&format!("no device with id “{}”", a.devices[1].id)),
        "{alert}"
    );
    assert_eq!(browser.text("#device-name").await, "Device not found");
    browser.shot("device-of-a-not-found").await;

    // The superuser sees both and switches between them in the top bar.
    browser.click("#logout").await;
    browser.wait_for("#login-form").await;
    browser
        .log_in_with("admin", fleetmq_tests::ADMIN_PASSWORD)
        .await;
    browser.wait_for("#devices tbody tr[data-device-id]").await;
    assert_eq!(browser.text("#summary").await, "7 devices");
    for (org, expected) in [(&b.org, "2 devices"), (&a.org, "5 devices")] {
        // Choosing reloads the page narrowed to that organization.
        browser.mark_document().await;
        browser.choose("#organization", org).await;
        browser.wait_replaced().await;
        browser.wait_for("#devices tbody tr[data-device-id]").await;
        assert_eq!(browser.text("#summary").await, expected);
    }
    browser.shot("superuser-switched").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_operator_is_sent_to_the_login_page_at_once() {
    let app = crate::spawn().await;
    let a = Tenant::create(&app, "org-a", 2).await;
    let mut browser = Browser::open(&app, "revoked").await;
    browser.log_in(&a.operator).await;
    browser.wait_for("#devices tbody tr[data-device-id]").await;
    browser.wait_for("#live-state[data-state=\"open\"]").await;

    // The administrator deactivates the operator while the page is open: the live stream
    // ends, is refused when the browser reopens it, and the page goes to the login form
    // without anyone clicking.
    let user = app.user_id(&a.operator).await;
    let answer = app
        .call(
            "PATCH",
            &format!("/api/v1/users/user/{user}/"),
            Some(&app.admin_token),
            Some(serde_json::json!({"is_active": false})),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    browser.wait_for("#login-form").await;
    browser.shot("revoked").await;
    browser.close().await;
}

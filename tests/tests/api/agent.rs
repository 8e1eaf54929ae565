//! The openwisp-config agent's HTTP protocol over a real socket, played as the agent does it:
//! register with the organization's shared secret, poll the checksum, download the archive,
//! report the status; and the organization's variables reaching the archive.

use serde_json::json;

use fleetmq_tests::TestApp;

const OPENWRT: &str = "netjsonconfig.OpenWrt";

/// The `name: value` line of a plain-text answer.
fn line(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn an_agent_registers_polls_downloads_and_reports_over_http() {
    let app = TestApp::spawn().await;
    let org = app.create_org("branch").await;
    let settings = format!("/api/v1/controller/organization/{org}/config-settings/");
    let changed = app
        .call(
            "PATCH",
            &settings,
            Some(&app.admin_token),
            Some(json!({"context": {"site": "hq"}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let secret = changed.str("shared_secret");
    let template = app
        .post(
            "/api/v1/controller/template/",
            &app.admin_token,
            json!({"name": "site", "organization": org, "backend": OPENWRT, "default": true,
                   "config": {"files": [{"path": "/etc/site", "mode": "0644", "contents": "site={{ site }}"}]}}),
        )
        .await;
    assert_eq!(template.status, 201, "{:?}", template.body);

    let registered = app
        .http
        .post(format!("{}/controller/device/register/", app.base))
        .form(&[
            ("secret", secret.as_str()),
            ("name", "ap-1"),
            ("mac_address", "02:00:00:00:10:01"),
            ("backend", OPENWRT),
            ("model", "TP-Link WDR4300"),
            ("os", "OpenWrt 23.05"),
            ("system", "Atheros AR9344"),
        ])
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status().as_u16(), 201);
    assert_eq!(
        registered
            .headers()
            .get("x-openwisp-controller")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let text = registered.text().await.expect("text");
    assert_eq!(line(&text, "registration-result"), "success", "{text}");
    assert_eq!(line(&text, "is-new"), "1");
    assert_eq!(line(&text, "hostname"), "ap-1");
    let (id, key) = (line(&text, "uuid"), line(&text, "key"));

    let checksum = app
        .http
        .get(format!(
            "{}/controller/device/checksum/{id}/?key={key}",
            app.base
        ))
        .send()
        .await
        .expect("checksum");
    assert_eq!(checksum.status().as_u16(), 200);
    let checksum = checksum.text().await.expect("text").trim().to_owned();
    assert_eq!(checksum.len(), 32, "{checksum}");

    let archive = app
        .http
        .get(format!(
            "{}/controller/device/download-config/{id}/?key={key}",
            app.base
        ))
        .send()
        .await
        .expect("download");
    assert_eq!(archive.status().as_u16(), 200);
    let archive = archive.bytes().await.expect("bytes");
    // The REST download is the same archive, and names the same checksum.
    let device = app
        .get("/api/v1/controller/device/?name=ap-1", &app.admin_token)
        .await;
    let device_id = device.body["results"][0]["id"]
        .as_str()
        .expect("the registered device is listed")
        .to_owned();
    let rest = app
        .http
        .get(format!(
            "{}/api/v1/controller/device/{device_id}/configuration/",
            app.base
        ))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("REST download");
    assert_eq!(
        rest.headers()
            .get("x-config-checksum")
            .and_then(|v| v.to_str().ok()),
        Some(checksum.as_str())
    );
    assert_eq!(rest.bytes().await.expect("bytes"), archive);

    let wrong = app
        .http
        .get(format!(
            "{}/controller/device/checksum/{id}/?key=not-the-key",
            app.base
        ))
        .send()
        .await
        .expect("checksum");
    assert_eq!(wrong.status().as_u16(), 403);
    assert_eq!(wrong.text().await.expect("text"), "error: wrong key\n");

    let reported = app
        .http
        .post(format!(
            "{}/controller/device/report-status/{id}/",
            app.base
        ))
        .form(&[("key", key.as_str()), ("status", "applied")])
        .send()
        .await
        .expect("report");
    assert_eq!(reported.status().as_u16(), 200);
    let text = reported.text().await.expect("text");
    assert_eq!(line(&text, "current-status"), "applied", "{text}");
    let detail = format!("/api/v1/controller/device/{device_id}/");
    assert_eq!(
        app.get(&detail, &app.admin_token).await.body["config"]["status"],
        "applied"
    );

    // The organization's variable changes: the device's checksum changes with it.
    let changed = app
        .call(
            "PATCH",
            &settings,
            Some(&app.admin_token),
            Some(json!({"context": {"site": "annex"}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let again = app
        .http
        .get(format!(
            "{}/controller/device/checksum/{id}/?key={key}",
            app.base
        ))
        .send()
        .await
        .expect("checksum")
        .text()
        .await
        .expect("text");
    assert_ne!(again.trim(), checksum);
    assert_eq!(
        app.get(&detail, &app.admin_token).await.body["config"]["status"],
        "modified"
    );
    app.shutdown().await;
}

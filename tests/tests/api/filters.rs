use fleetmq_tests::TestApp;
use serde_json::{Value, json};

fn names(reply: &fleetmq_tests::Reply) -> Vec<String> {
    let mut names: Vec<String> = reply.body["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|d| d["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn list(app: &TestApp, query: &str) -> fleetmq_tests::Reply {
    app.get(
        &format!("/api/v1/controller/device/?{query}"),
        &app.admin_token,
    )
    .await
}

#[tokio::test]
async fn every_seed_filter_narrows_the_device_list() {
    let app = TestApp::spawn().await;
    let acme = app.create_org("acme").await;
    let beta = app.create_org("beta").await;
    let plain = app.create_device(&app.admin_token, &acme, "plain").await;
    let wisp = app
        .post("/api/v1/controller/device/", &app.admin_token, json!({"name": "wisp", "organization": acme,
            "mac_address": fleetmq_tests::mac_for("wisp"), "config": {"backend": "netjsonconfig.OpenWisp"}}))
        .await;
    assert_eq!(wisp.status, 201);
    let gone = app.create_device(&app.admin_token, &beta, "gone").await;
    let gone_id = gone.str("id");
    app.call(
        "PATCH",
        &format!("/api/v1/controller/device/{gone_id}/"),
        Some(&app.admin_token),
        Some(json!({"config": {"config": {"general": {}}}})),
    )
    .await;
    app.call(
        "POST",
        &format!("/api/v1/controller/device/{gone_id}/deactivate/"),
        Some(&app.admin_token),
        None,
    )
    .await;

    assert_eq!(
        names(&list(&app, "config__status=modified").await),
        ["wisp"]
    );
    assert_eq!(
        names(&list(&app, "config__status=deactivating").await),
        ["gone"]
    );
    assert_eq!(
        names(&list(&app, "config__backend=netjsonconfig.OpenWisp").await),
        ["wisp"]
    );
    assert_eq!(
        names(&list(&app, "config__backend=netjsonconfig.OpenWrt").await),
        ["gone"]
    );
    assert_eq!(
        names(&list(&app, &format!("organization={beta}")).await),
        ["gone"]
    );
    assert_eq!(
        names(&list(&app, "organization_slug=acme").await),
        ["plain", "wisp"]
    );
    assert_eq!(
        names(&list(&app, "organization_slug=nobody").await),
        Vec::<String>::new()
    );
    let template = uuid::Uuid::new_v4();
    assert_eq!(
        list(&app, &format!("config__templates={template}"))
            .await
            .body["count"],
        0
    );
    assert_eq!(
        list(&app, &format!("group={template}")).await.body["count"],
        0
    );
    assert_eq!(
        list(&app, "with_geo=true").await.body["count"],
        0,
        "no device has a location yet"
    );
    assert_eq!(list(&app, "with_geo=false").await.body["count"], 3);

    let created = plain.str("created");
    assert_eq!(
        names(&list(&app, &format!("created={created}")).await),
        ["plain"]
    );
    assert_eq!(
        names(&list(&app, &format!("created__lt={created}")).await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&list(&app, &format!("created__gte={created}")).await),
        ["gone", "plain", "wisp"]
    );
    let wisp_created = wisp.str("created");
    assert_eq!(
        names(
            &list(
                &app,
                &format!("created__gte={created}&created__lt={wisp_created}")
            )
            .await
        ),
        ["plain"]
    );
    assert_eq!(
        list(
            &app,
            &format!("created__gte={created}&config__backend=netjsonconfig.OpenWisp")
        )
        .await
        .body["count"],
        1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_filter_values_are_400_with_the_field_named() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("config__templates=not-a-uuid", "config__templates"),
        ("group=123", "group"),
        ("config__status=sideways", "config__status"),
        ("config__backend=nope", "config__backend"),
        ("created__gte=yesterday", "created__gte"),
        ("with_geo=maybe", "with_geo"),
        ("organization=not-a-uuid", "organization"),
    ] {
        let reply = list(&app, query).await;
        assert_eq!(reply.status, 400, "{query}");
        assert!(
            matches!(reply.body[field], Value::Array(_)),
            "{query}: {:?}",
            reply.body
        );
    }
    app.shutdown().await;
}

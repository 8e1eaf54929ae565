use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::MqttClient;
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
        ("is_online=maybe", "is_online"),
        ("ordering=mac_address", "ordering"),
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

/// Names of a list's page, in its order.
fn in_order(reply: &fleetmq_tests::Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|d| d["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn listed(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    in_order(
        &app.get(&format!("/api/v1/controller/device/?{query}"), token)
            .await,
    )
}

#[tokio::test]
async fn the_console_searches_orders_and_filters_on_presence_within_its_organizations() {
    let app = TestApp::spawn().await;
    let orgs = app.two_organizations().await;
    let bob = app.create_user("bob", &["Operator"], &[&orgs.org_b]).await;
    for (org, name, model) in [
        (&orgs.org_a, "lobby-router", "tl-wr841"),
        (&orgs.org_a, "kitchen-ap", "archer-c7"),
        (&orgs.org_b, "lobby-b", "tl-wr841"),
    ] {
        let reply = app
            .post(
                "/api/v1/controller/device/",
                &app.admin_token,
                json!({"name": name,
                "organization": org, "mac_address": fleetmq_tests::mac_for(name), "model": model}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    }
    let alice = orgs.manager_a.as_str();

    // Search: part of a name, ignoring case; part of a MAC address written with dashes; an id.
    assert_eq!(listed(&app, alice, "search=LOBBY").await, ["lobby-router"]);
    assert_eq!(
        listed(&app, &app.admin_token, "search=lobby").await,
        ["lobby-b", "lobby-router"]
    );
    let mac = fleetmq_tests::mac_for("kitchen-ap");
    let dashed = mac[3..11].replace(':', "-").to_uppercase();
    assert_eq!(
        listed(&app, alice, &format!("search={dashed}")).await,
        ["kitchen-ap"]
    );
    assert_eq!(
        listed(&app, alice, &format!("search={}", &orgs.device_a.id[..8])).await,
        ["dev-a"]
    );
    assert_eq!(
        listed(&app, alice, &format!("search={}", orgs.device_b.id)).await,
        Vec::<String>::new(),
        "another organization's device is not found even by its id"
    );
    assert_eq!(
        listed(&app, alice, "model=tl-wr841").await,
        ["lobby-router"]
    );

    // Orders.
    assert_eq!(
        listed(&app, alice, "ordering=name").await,
        ["dev-a", "kitchen-ap", "lobby-router"]
    );
    assert_eq!(
        listed(&app, alice, "ordering=-name").await,
        ["lobby-router", "kitchen-ap", "dev-a"]
    );
    assert_eq!(
        listed(&app, alice, "ordering=created").await,
        ["dev-a", "lobby-router", "kitchen-ap"]
    );
    assert_eq!(
        listed(&app, alice, "ordering=name&page_size=1&page=2").await,
        ["kitchen-ap"]
    );

    // Presence: nobody connected yet.
    let all = app.get("/api/v1/controller/device/", alice).await;
    for device in all.body["results"].as_array().into_iter().flatten() {
        assert_eq!(device["presence"], json!({"online": false, "since": null}));
    }
    assert!(listed(&app, alice, "is_online=true").await.is_empty());

    let _connected = MqttClient::connect(orgs.device_a.options(app.mqtt_addr))
        .await
        .expect("dev-a connects");
    let online = app
        .eventually("/api/v1/controller/device/?is_online=true", alice, |r| {
            r.body["count"] == 1
        })
        .await;
    assert_eq!(in_order(&online), ["dev-a"]);
    assert_eq!(online.body["results"][0]["presence"]["online"], true);
    assert!(
        online.body["results"][0]["presence"]["since"].is_string(),
        "{:?}",
        online.body
    );
    let detail = app
        .get(
            &format!("/api/v1/controller/device/{}/", orgs.device_a.id),
            alice,
        )
        .await;
    assert_eq!(
        detail.body["presence"],
        online.body["results"][0]["presence"]
    );
    assert_eq!(
        listed(&app, alice, "is_online=false").await,
        ["kitchen-ap", "lobby-router"]
    );

    // Bob manages organization B only: no filter shows him A's devices.
    for (query, expected) in [
        ("search=lobby", vec!["lobby-b"]),
        ("search=dev", vec!["dev-b"]),
        ("model=tl-wr841", vec!["lobby-b"]),
        ("is_online=true", vec![]),
        ("is_online=false", vec!["lobby-b", "dev-b"]),
        ("ordering=name", vec!["dev-b", "lobby-b"]),
        ("firmware_version=1.0", vec![]),
    ] {
        assert_eq!(listed(&app, &bob, query).await, expected, "{query}");
    }
    app.shutdown().await;
}

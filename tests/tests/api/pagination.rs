use fleetmq_tests::TestApp;

#[tokio::test]
async fn lists_page_newest_first_with_links_and_a_capped_page_size() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let mut names = Vec::new();
    for n in 0..25 {
        let name = format!("dev-{n:02}");
        assert_eq!(
            app.create_device(&app.admin_token, &org, &name)
                .await
                .status,
            201
        );
        names.push(name);
    }
    names.reverse();

    let first = app
        .get("/api/v1/controller/device/", &app.admin_token)
        .await;
    assert_eq!(first.body["count"], 25);
    assert_eq!(
        first.body["results"].as_array().map(Vec::len),
        Some(10),
        "default page size is 10"
    );
    assert_eq!(
        first.body["results"][0]["name"],
        names[0].as_str(),
        "newest first"
    );
    assert_eq!(first.body["previous"], serde_json::Value::Null);
    let next = first.str("next");
    assert!(
        next.ends_with("/api/v1/controller/device/?page=2"),
        "{next}"
    );

    let third = app
        .get("/api/v1/controller/device/?page=3", &app.admin_token)
        .await;
    assert_eq!(third.body["results"].as_array().map(Vec::len), Some(5));
    assert_eq!(third.body["results"][4]["name"], names[24].as_str());
    assert_eq!(third.body["next"], serde_json::Value::Null);
    assert!(
        third
            .str("previous")
            .ends_with("/api/v1/controller/device/?page=2")
    );

    let second = app
        .get(
            "/api/v1/controller/device/?page=2&page_size=10",
            &app.admin_token,
        )
        .await;
    assert!(
        second
            .str("previous")
            .ends_with("/api/v1/controller/device/?page_size=10"),
        "page 1 links drop the page parameter"
    );

    let capped = app
        .get(
            "/api/v1/controller/device/?page_size=1000",
            &app.admin_token,
        )
        .await;
    assert_eq!(capped.body["results"].as_array().map(Vec::len), Some(25));
    assert_eq!(capped.body["next"], serde_json::Value::Null);

    for past in ["?page=4", "?page=0", "?page=abc"] {
        let reply = app
            .get(
                &format!("/api/v1/controller/device/{past}"),
                &app.admin_token,
            )
            .await;
        assert_eq!(reply.status, 404, "{past}");
        assert_eq!(reply.body["detail"], "Invalid page.");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn page_size_100_is_the_maximum() {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    for n in 0..101 {
        app.create_device(&app.admin_token, &org, &format!("d{n}"))
            .await;
    }
    let page = app
        .get("/api/v1/controller/device/?page_size=500", &app.admin_token)
        .await;
    assert_eq!(page.body["count"], 101);
    assert_eq!(page.body["results"].as_array().map(Vec::len), Some(100));
    assert!(page.str("next").contains("page=2"));
    app.shutdown().await;
}

//! Handler tests of `/api/v1/controller/template/`, `/api/v1/controller/group/`, the
//! certificate's group, and OpenWISP's configuration rules on device writes.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestApi, random_mac};
use fleetmq_store::Group;
use serde_json::{Value, json};

const TEMPLATES: &str = "/api/v1/controller/template/";
const GROUPS: &str = "/api/v1/controller/group/";
const DEVICES: &str = "/api/v1/controller/device/";
const OPENWRT: &str = "netjsonconfig.OpenWrt";
const OPENWISP: &str = "netjsonconfig.OpenWisp";

fn path(base: &str, id: &str) -> String {
    format!("{base}{id}/")
}

fn config() -> Value {
    json!({"interfaces": [{"name": "eth0", "type": "ethernet"}]})
}

/// Creates a template as `token` with `extra` fields; returns its id.
async fn template(
    api: &TestApi,
    token: &str,
    org: Option<&str>,
    name: &str,
    extra: Value,
) -> String {
    let mut body =
        json!({"name": name, "organization": org, "backend": OPENWRT, "config": config()});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let reply = api.post(TEMPLATES, token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.str("id")
}

/// Creates a device with `config`; returns the reply body.
async fn device_with(api: &TestApi, token: &str, org: &str, name: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "organization": org, "mac_address": random_mac()});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let reply = api.post(DEVICES, token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

fn templates_of(device: &Value) -> Vec<String> {
    device["config"]["templates"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_operator_creates_changes_and_deletes_a_template() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;

    let created = api
        .post(
            TEMPLATES,
            &operator,
            json!({"name": "wifi", "organization": acme, "backend": OPENWRT, "config": config(),
                   "tags": ["mesh"], "required": true, "default_values": {"ssid": "x"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["type"], "generic");
    assert_eq!(created.body["required"], true);
    assert_eq!(created.body["default"], true, "required implies default");
    assert_eq!(created.body["tags"], json!(["mesh"]));
    assert_eq!(created.body["vpn"], Value::Null);
    let t = path(TEMPLATES, &created.str("id"));

    let patched = api
        .patch(&t, &operator, json!({"notes": "n", "required": false}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["notes"], "n");
    assert_eq!(patched.body["default"], true, "default stays as set");
    let got = api.get(&t, &operator).await;
    assert_eq!(got.body["required"], false);
    assert_eq!(
        api.delete(&t, &operator).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get(&t, &operator).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn template_bodies_get_openwisps_messages() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let admin = api.admin.clone();
    let base = json!({"name": "t", "organization": acme, "backend": OPENWRT});

    let empty = api.post(TEMPLATES, &admin, base.clone()).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        empty.body,
        json!({"config": ["The configuration field cannot be empty."]})
    );
    let mut vpn_on_generic = base.clone();
    vpn_on_generic["type"] = json!("generic");
    vpn_on_generic["config"] = config();
    vpn_on_generic["vpn"] = json!(uuid::Uuid::new_v4());
    let reply = api.post(TEMPLATES, &admin, vpn_on_generic).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"vpn": ["To select a VPN, set the template type to 'VPN-client'"]})
    );
    let vpn = uuid::Uuid::new_v4();
    let mut unknown_vpn = base.clone();
    unknown_vpn["type"] = json!("vpn");
    unknown_vpn["vpn"] = json!(vpn);
    let reply = api.post(TEMPLATES, &admin, unknown_vpn).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"vpn": [format!("Invalid pk \"{vpn}\" - object does not exist.")]})
    );
    let reply = api
        .post(
            TEMPLATES,
            &admin,
            json!({"organization": acme, "type": "wat", "backend": "x", "config": [], "tags": "a"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["name"], json!(["This field is required."]));
    assert_eq!(
        reply.body["type"],
        json!(["\"wat\" is not a valid choice."])
    );
    assert_eq!(
        reply.body["backend"],
        json!(["\"x\" is not a valid choice."])
    );
    assert!(reply.body["config"].is_array(), "{:?}", reply.body);
    assert!(reply.body["tags"].is_array(), "{:?}", reply.body);

    let malformed = api
        .send(
            Request::builder()
                .method("POST")
                .uri(TEMPLATES)
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from("{\"name\": "))
                .expect("request"),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    template(&api, &admin, Some(&acme), "dup", json!({})).await;
    let again = api
        .post(
            TEMPLATES,
            &admin,
            json!({"name": "dup", "organization": acme, "backend": OPENWRT, "config": config()}),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.body,
        json!({"non_field_errors": ["The fields organization, name must make a unique set."]})
    );
    let shared_dup = api
        .post(
            TEMPLATES,
            &admin,
            json!({"name": "dup", "organization": null, "backend": OPENWRT, "config": config()}),
        )
        .await;
    assert_eq!(shared_dup.status, StatusCode::BAD_REQUEST);
    assert!(
        shared_dup.body["name"][0]
            .as_str()
            .is_some_and(|m| m.starts_with("There is already a template of another organization")),
        "{:?}",
        shared_dup.body
    );
}

#[tokio::test]
async fn shared_templates_are_visible_to_all_but_written_by_superusers_only() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let shared = template(&api, &api.admin, None, "shared", json!({})).await;
    let mine = template(&api, &operator, Some(&acme), "mine", json!({})).await;
    let theirs = template(&api, &api.admin, Some(&beta), "theirs", json!({})).await;

    let listed = api.get(TEMPLATES, &operator).await;
    assert_eq!(names(&listed.body), vec!["mine", "shared"]);
    assert_eq!(
        api.get(&path(TEMPLATES, &theirs), &operator).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&path(TEMPLATES, &shared), &operator).await.status,
        StatusCode::OK
    );
    let change = api
        .patch(&path(TEMPLATES, &shared), &operator, json!({"notes": "x"}))
        .await;
    assert_eq!(change.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api.delete(&path(TEMPLATES, &shared), &operator)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let made_shared = api
        .post(
            TEMPLATES,
            &operator,
            json!({"name": "s2", "organization": null, "backend": OPENWRT, "config": config()}),
        )
        .await;
    assert_eq!(made_shared.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        made_shared.body,
        json!({"organization": ["This field may not be null."]})
    );
    let elsewhere = api
        .post(
            TEMPLATES,
            &operator,
            json!({"name": "s3", "organization": beta, "backend": OPENWRT, "config": config()}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        elsewhere.body,
        json!({"organization": [format!("Invalid pk \"{beta}\" - object does not exist.")]})
    );
    let own = api
        .patch(&path(TEMPLATES, &mine), &operator, json!({"notes": "x"}))
        .await;
    assert_eq!(own.status, StatusCode::OK);
}

#[tokio::test]
async fn the_template_list_filters_like_openwisp() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let admin = api.admin.clone();
    template(&api, &admin, Some(&acme), "plain", json!({})).await;
    template(&api, &admin, Some(&acme), "req", json!({"required": true})).await;
    template(
        &api,
        &admin,
        Some(&acme),
        "wisp",
        json!({"backend": OPENWISP}),
    )
    .await;
    template(&api, &admin, None, "shared", json!({"default": true})).await;

    let get = |q: &str| {
        let q = format!("{TEMPLATES}?{q}");
        let api = &api;
        let admin = admin.clone();
        async move { api.get(&q, &admin).await }
    };
    assert_eq!(
        names(&get(&format!("organization={acme}")).await.body),
        vec!["plain", "req", "wisp"]
    );
    assert_eq!(
        names(&get("organization_slug=acme").await.body),
        vec!["plain", "req", "wisp"]
    );
    assert_eq!(get("organization_slug=nope").await.body["count"], 0);
    assert_eq!(
        names(&get(&format!("backend={OPENWISP}")).await.body),
        vec!["wisp"]
    );
    assert_eq!(names(&get("required=true").await.body), vec!["req"]);
    assert_eq!(
        names(&get("default=true").await.body),
        vec!["req", "shared"]
    );
    assert_eq!(names(&get("type=generic").await.body).len(), 4);
    assert_eq!(get("type=vpn").await.body["count"], 0);
    assert_eq!(get("created__lt=2000-01-01").await.body["count"], 0);
    assert_eq!(get("created__gte=2000-01-01").await.body["count"], 4);
    let bad = get("type=wat").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_new_configuration_gets_default_templates_and_keeps_required_ones() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let admin = api.admin.clone();
    let required = template(
        &api,
        &admin,
        Some(&acme),
        "a-required",
        json!({"required": true}),
    )
    .await;
    let shared_default = template(&api, &admin, None, "b-shared", json!({"default": true})).await;
    template(
        &api,
        &admin,
        Some(&acme),
        "c-wisp-default",
        json!({"default": true, "backend": OPENWISP}),
    )
    .await;
    let mine = template(&api, &admin, Some(&acme), "mine", json!({})).await;
    let other = template(&api, &admin, Some(&acme), "other", json!({})).await;

    let device = device_with(
        &api,
        &admin,
        &acme,
        "gw",
        json!({"config": {"templates": [other, mine]}}),
    )
    .await;
    assert_eq!(
        templates_of(&device),
        vec![
            required.clone(),
            shared_default.clone(),
            other.clone(),
            mine.clone()
        ],
        "defaults of the same backend first, the given ones in their order"
    );
    let d = path(DEVICES, device["id"].as_str().expect("id"));
    let emptied = api
        .patch(&d, &admin, json!({"config": {"templates": []}}))
        .await;
    assert_eq!(emptied.status, StatusCode::OK, "{:?}", emptied.body);
    assert_eq!(
        templates_of(&emptied.body),
        vec![required.clone()],
        "required templates stay"
    );
    let reordered = api
        .patch(
            &d,
            &admin,
            json!({"config": {"templates": [mine, required, other]}}),
        )
        .await;
    assert_eq!(
        templates_of(&reordered.body),
        vec![mine.clone(), required.clone(), other.clone()]
    );

    let filtered = api
        .get(&format!("{DEVICES}?config__templates={mine}"), &admin)
        .await;
    assert_eq!(filtered.body["count"], 1);

    // Deleting a template takes it out of every configuration.
    assert_eq!(
        api.delete(&path(TEMPLATES, &mine), &admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        templates_of(&api.get(&d, &admin).await.body),
        vec![required, other]
    );
    let plain = device_with(&api, &admin, &acme, "plain", json!({})).await;
    assert_eq!(
        plain["config"],
        Value::Null,
        "no configuration, no templates"
    );
}

#[tokio::test]
async fn device_templates_must_be_visible_of_its_organization_and_its_backend() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let admin = api.admin.clone();
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let theirs = template(&api, &admin, Some(&beta), "theirs", json!({})).await;
    let wisp = template(
        &api,
        &admin,
        Some(&acme),
        "wisp",
        json!({"backend": OPENWISP}),
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    let body = |templates: Value| {
        json!({"name": "gw", "organization": acme, "mac_address": random_mac(),
               "config": {"templates": templates}})
    };

    let foreign = api.post(DEVICES, &admin, body(json!([theirs]))).await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        foreign.body,
        json!({"config": ["The following templates are owned by organizations which do not match the organization of this configuration: theirs"]})
    );
    let hidden = api.post(DEVICES, &operator, body(json!([theirs]))).await;
    assert_eq!(hidden.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        hidden.body,
        json!({"config": {"templates": [format!("Invalid pk \"{theirs}\" - object does not exist.")]}})
    );
    let gone = api.post(DEVICES, &admin, body(json!([unknown]))).await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        gone.body,
        json!({"config": {"templates": [format!("Invalid pk \"{unknown}\" - object does not exist.")]}})
    );
    let backend = api.post(DEVICES, &admin, body(json!([wisp]))).await;
    assert_eq!(backend.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        backend.body,
        json!({"config": ["The following templates use a backend which does not match the backend of this configuration: wisp"]})
    );
    let mut matching = body(json!([wisp]));
    matching["config"]["backend"] = json!(OPENWISP);
    assert_eq!(
        api.post(DEVICES, &admin, matching).await.status,
        StatusCode::CREATED
    );
    let not_object = api
        .post(DEVICES, &admin, json!({"name": "gw2", "organization": acme, "mac_address": random_mac(), "config": {"config": [1]}}))
        .await;
    assert_eq!(not_object.status, StatusCode::BAD_REQUEST);
    assert!(
        not_object.body["config"]["config"].is_array(),
        "{:?}",
        not_object.body
    );
}

#[tokio::test]
async fn moving_a_device_to_another_organization_swaps_its_required_templates() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let admin = api.admin.clone();
    let acme_required = template(
        &api,
        &admin,
        Some(&acme),
        "acme-req",
        json!({"required": true}),
    )
    .await;
    let acme_plain = template(&api, &admin, Some(&acme), "acme-plain", json!({})).await;
    let beta_required = template(
        &api,
        &admin,
        Some(&beta),
        "beta-req",
        json!({"required": true}),
    )
    .await;
    let shared = template(&api, &admin, None, "shared", json!({})).await;
    let device = device_with(
        &api,
        &admin,
        &acme,
        "gw",
        json!({"config": {"templates": [acme_plain, shared]}}),
    )
    .await;
    assert_eq!(
        templates_of(&device),
        vec![acme_required, acme_plain, shared.clone()]
    );

    let moved = api
        .patch(
            &path(DEVICES, device["id"].as_str().expect("id")),
            &admin,
            json!({"organization": beta}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(templates_of(&moved.body), vec![beta_required, shared]);
}

#[tokio::test]
async fn a_template_becoming_required_joins_existing_configurations() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let admin = api.admin.clone();
    let plain = template(&api, &admin, Some(&acme), "plain", json!({})).await;
    // Its own interface, so that joining a configuration changes what it renders to.
    let eth1 = json!({"config": {"interfaces": [{"name": "eth1", "type": "ethernet"}]}});
    let later = template(&api, &admin, Some(&acme), "later", eth1).await;
    let device = device_with(
        &api,
        &admin,
        &acme,
        "gw",
        json!({"config": {"templates": [plain]}}),
    )
    .await;
    let d = path(DEVICES, device["id"].as_str().expect("id"));
    let mut changes = api.store().blocking().config_changes();

    let made = api
        .patch(&path(TEMPLATES, &later), &admin, json!({"required": true}))
        .await;
    assert_eq!(made.status, StatusCode::OK);
    assert_eq!(
        templates_of(&api.get(&d, &admin).await.body),
        vec![plain.clone(), later]
    );
    let change = changes.try_recv().expect("the change is announced");
    assert_eq!(change.devices.len(), 1);
    assert_eq!(
        change.devices[0].0.to_string(),
        device["id"].as_str().expect("id")
    );

    // A change of a template a device uses names the device too.
    api.patch(
        &path(TEMPLATES, &plain),
        &admin,
        json!({"config": {"system": {}}}),
    )
    .await;
    let change = changes.try_recv().expect("the change is announced");
    assert_eq!(
        change.devices[0].0.to_string(),
        device["id"].as_str().expect("id")
    );
}

#[tokio::test]
async fn groups_bring_their_templates_and_swap_them_when_changed() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let beta = api.org("beta").await;
    let admin = api.admin.clone();
    let operator = api.user("otto", &[Group::Operator], &[&acme]).await;
    let t1 = template(&api, &admin, Some(&acme), "t1", json!({})).await;
    let t2 = template(&api, &admin, None, "t2", json!({})).await;
    let own = template(&api, &admin, Some(&acme), "own", json!({})).await;
    let default = template(&api, &admin, Some(&acme), "def", json!({"default": true})).await;
    let theirs = template(&api, &admin, Some(&beta), "theirs", json!({})).await;

    let missing = api
        .post(
            GROUPS,
            &operator,
            json!({"name": "g", "organization": acme}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.body,
        json!({"templates": ["This field is required."]})
    );
    let refused = api
        .post(
            GROUPS,
            &operator,
            json!({"name": "g", "organization": acme, "templates": [default, theirs]}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body,
        json!({"templates": [
            format!("Invalid pk \"{default}\" - object does not exist."),
            format!("Invalid pk \"{theirs}\" - object does not exist."),
        ]})
    );
    let created = api
        .post(
            GROUPS,
            &operator,
            json!({"name": "g", "organization": acme, "templates": [t1],
            "context": {"ssid": "x"}, "meta_data": {"k": 1}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let group = created.str("id");
    let dup = api
        .post(
            GROUPS,
            &operator,
            json!({"name": "g", "organization": acme, "templates": []}),
        )
        .await;
    assert_eq!(
        dup.body,
        json!({"non_field_errors": ["The fields organization, name must make a unique set."]})
    );
    let empty_group = api
        .post(
            GROUPS,
            &operator,
            json!({"name": "empty", "organization": acme, "templates": []}),
        )
        .await
        .str("id");
    let beta_group = api
        .post(
            GROUPS,
            &admin,
            json!({"name": "b", "organization": beta, "templates": []}),
        )
        .await
        .str("id");

    // A device joining the group gets its templates (a configuration is created for them).
    let device = device_with(&api, &operator, &acme, "gw", json!({"group": group})).await;
    assert_eq!(templates_of(&device), vec![default.clone(), t1.clone()]);
    let d = path(DEVICES, device["id"].as_str().expect("id"));
    let mine = api
        .patch(
            &d,
            &operator,
            json!({"config": {"templates": [default, t1, own]}}),
        )
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);

    // The group's templates change: the device swaps t1 for t2 and keeps its own.
    let put = api
        .put(
            &path(GROUPS, &group),
            &operator,
            json!({"name": "g", "organization": acme, "templates": [t2]}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(
        templates_of(&api.get(&d, &operator).await.body),
        vec![default.clone(), own.clone(), t2.clone()]
    );

    // Leaving the group takes its templates out.
    let left = api
        .patch(&d, &operator, json!({"group": empty_group}))
        .await;
    assert_eq!(templates_of(&left.body), vec![default.clone(), own.clone()]);
    let foreign = api.patch(&d, &admin, json!({"group": beta_group})).await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        foreign.body,
        json!({"group": ["Please ensure that the organization of this device and the organization of the related Device Group match."]})
    );
    let hidden = api.patch(&d, &operator, json!({"group": beta_group})).await;
    assert_eq!(
        hidden.body,
        json!({"group": [format!("Invalid pk \"{beta_group}\" - object does not exist.")]})
    );

    // `empty=true` lists the groups that have devices (OpenWISP's naming).
    let with_devices = api.get(&format!("{GROUPS}?empty=true"), &operator).await;
    assert_eq!(names(&with_devices.body), vec!["empty"]);
    let without = api.get(&format!("{GROUPS}?empty=false"), &operator).await;
    assert_eq!(names(&without.body), vec!["g"]);
    assert_eq!(
        names(
            &api.get(&format!("{GROUPS}?organization_slug=acme"), &admin)
                .await
                .body
        ),
        vec!["empty", "g"]
    );
    assert_eq!(
        names(
            &api.get(&format!("{GROUPS}?organization={beta}"), &admin)
                .await
                .body
        ),
        vec!["b"]
    );
    assert_eq!(
        api.get(&path(GROUPS, &beta_group), &operator).await.status,
        StatusCode::NOT_FOUND
    );

    // Deleting a template takes it out of groups.
    api.delete(&path(TEMPLATES, &t2), &admin).await;
    assert_eq!(
        api.get(&path(GROUPS, &group), &operator).await.body["templates"],
        json!([])
    );
    assert_eq!(
        api.delete(&path(GROUPS, &group), &operator).await.status,
        StatusCode::NO_CONTENT
    );
}

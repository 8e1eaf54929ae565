//! The auth service external brokers ask (`/broker-auth/…`), driven with the requests RabbitMQ's
//! `rabbitmq_auth_backend_http` and EMQX's HTTP authenticator and authorizer send.

use fleetmq_api::routes::broker_auth::BrokerAuthConfig;
use fleetmq_tests::{TestApp, TwoOrganizations};
use serde_json::{Value, json};

const SECRET: &str = "broker-auth-secret-for-tests";

const BRIDGE: (&str, &str) = ("fleetmq-bridge", "bridge-password-for-tests");

async fn app_with_broker_auth(rate: u32) -> TestApp {
    TestApp::spawn_with(|config| {
        config.api.broker_auth = Some(BrokerAuthConfig {
            requests_per_second: rate,
            bridge: Some((BRIDGE.0.to_owned(), BRIDGE.1.to_owned())),
            ..BrokerAuthConfig::new(SECRET.to_owned())
        });
    })
    .await
}

/// `application/x-www-form-urlencoded` as RabbitMQ's plugin writes it.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POSTs a RabbitMQ question (HTTP Basic, as the plugin sends userinfo from its URL); returns
/// status and body text.
async fn rabbitmq(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let response = app
        .http
        .post(format!("{}/broker-auth/rabbitmq/{path}", app.base))
        .basic_auth("rabbitmq", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text body"))
}

async fn rabbitmq_says(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> String {
    let (status, body) = rabbitmq(app, path, fields).await;
    assert_eq!(status, 200, "{path} {fields:?}: {body}");
    body
}

/// POSTs an EMQX request body (Bearer, as an EMQX `headers` setting sends it).
async fn emqx(app: &TestApp, path: &str, body: Value) -> Value {
    let reply = app
        .call(
            "POST",
            &format!("/broker-auth/emqx/{path}"),
            Some(SECRET),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

/// A RabbitMQ topic question about MQTT topic `topic` (sent as its routing key).
async fn rabbitmq_topic(app: &TestApp, username: &str, permission: &str, topic: &str) -> String {
    let routing_key: String = topic
        .chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            '+' => '*',
            other => other,
        })
        .collect();
    rabbitmq_says(
        app,
        "topic",
        &[
            ("username", username),
            ("vhost", "/"),
            ("resource", "topic"),
            ("name", "amq.topic"),
            ("permission", permission),
            ("routing_key", &routing_key),
            ("variable_map.client_id", username),
        ],
    )
    .await
}

#[tokio::test]
async fn rabbitmq_logs_devices_and_operators_in_with_the_embedded_brokers_rules() {
    let app = app_with_broker_auth(5_000).await;
    let TwoOrganizations {
        device_a,
        manager_a,
        ..
    } = app.two_organizations().await;
    let login = |user: &str, password: &str, client_id: &str| {
        [
            ("username", user.to_owned()),
            ("password", password.to_owned()),
            ("vhost", "/".to_owned()),
            ("client_id", client_id.to_owned()),
        ]
    };
    let ask = |fields: [(&'static str, String); 4]| {
        let app = &app;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            rabbitmq_says(app, "user", &fields).await
        }
    };
    assert_eq!(
        ask(login(&device_a.id, &device_a.key, &device_a.id)).await,
        "allow"
    );
    assert_eq!(
        ask(login(&device_a.id, "wrong-key", &device_a.id)).await,
        "deny"
    );
    // A device's client id is its id, as on the embedded broker.
    assert_eq!(
        ask(login(&device_a.id, &device_a.key, "someone-else")).await,
        "deny"
    );
    assert_eq!(
        ask(login("alice", &manager_a, "alice-console")).await,
        "allow"
    );
    assert_eq!(
        ask(login("alice", "not-a-token", "alice-console")).await,
        "deny"
    );
    assert_eq!(ask(login("nobody", &manager_a, "x")).await, "deny");

    // GET with a query string, the plugin's default method, answers the same.
    let response = app
        .http
        .get(format!(
            "{}/broker-auth/rabbitmq/user?{}",
            app.base,
            form(&[("username", &device_a.id), ("password", &device_a.key)])
        ))
        .basic_auth("rabbitmq", Some(SECRET))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.text().await.expect("text"), "allow");

    let vhost = |vhost: &'static str| {
        let app = &app;
        let user = device_a.id.clone();
        async move {
            rabbitmq_says(
                app,
                "vhost",
                &[("username", &user), ("vhost", vhost), ("ip", "127.0.0.1")],
            )
            .await
        }
    };
    assert_eq!(vhost("/").await, "allow");
    assert_eq!(vhost("other").await, "deny");
    app.shutdown().await;
}

#[tokio::test]
async fn rabbitmq_topics_and_queues_keep_tenants_and_devices_apart() {
    let app = app_with_broker_auth(5_000).await;
    let t = app.two_organizations().await;
    let (a, b) = (&t.device_a, &t.device_b);
    let own_up = format!("fleetmq/v1/org-a/{}/up/telemetry", a.id);
    let own_down = format!("fleetmq/v1/org-a/{}/down/#", a.id);
    let other_up = format!("fleetmq/v1/org-b/{}/up/telemetry", b.id);
    let other_down = format!("fleetmq/v1/org-b/{}/down/#", b.id);

    assert_eq!(rabbitmq_topic(&app, &a.id, "write", &own_up).await, "allow");
    assert_eq!(
        rabbitmq_topic(&app, &a.id, "write", &other_up).await,
        "deny"
    );
    assert_eq!(
        rabbitmq_topic(&app, &a.id, "read", &own_down).await,
        "allow"
    );
    assert_eq!(
        rabbitmq_topic(&app, &a.id, "read", &other_down).await,
        "deny"
    );
    assert_eq!(rabbitmq_topic(&app, &a.id, "read", "#").await, "deny");

    // An operator reads their organization's tree, named literally: a broker that checks
    // filters only would deliver every tenant's messages to `fleetmq/v1/+/…`.
    assert_eq!(
        rabbitmq_topic(&app, "alice", "read", "fleetmq/v1/org-a/#").await,
        "allow"
    );
    assert_eq!(
        rabbitmq_topic(&app, "alice", "read", "fleetmq/v1/+/+/up/telemetry").await,
        "deny"
    );
    assert_eq!(
        rabbitmq_topic(&app, "alice", "read", "fleetmq/v1/org-b/#").await,
        "deny"
    );
    assert_eq!(
        rabbitmq_topic(&app, "alice", "write", &own_up).await,
        "deny"
    );

    let queue = |user: String, name: String, permission: &'static str| {
        let app = &app;
        async move {
            rabbitmq_says(
                app,
                "resource",
                &[
                    ("username", &user),
                    ("vhost", "/"),
                    ("resource", "queue"),
                    ("name", &name),
                    ("permission", permission),
                ],
            )
            .await
        }
    };
    let queue_of = |client: &str| format!("mqtt-subscription-{client}qos1");
    assert_eq!(
        queue(a.id.clone(), queue_of(&a.id), "configure").await,
        "allow"
    );
    assert_eq!(queue(a.id.clone(), queue_of(&b.id), "read").await, "deny");
    assert_eq!(
        queue("alice".into(), queue_of("alice-console"), "read").await,
        "allow"
    );
    // Nobody else may take a device's queue, which holds its commands.
    assert_eq!(queue("alice".into(), queue_of(&a.id), "read").await, "deny");
    assert_eq!(
        queue(a.id.clone(), "some-queue".into(), "read").await,
        "deny"
    );
    let exchange = rabbitmq_says(
        &app,
        "resource",
        &[
            ("username", &a.id),
            ("vhost", "/"),
            ("resource", "exchange"),
            ("name", "amq.topic"),
            ("permission", "write"),
        ],
    )
    .await;
    assert_eq!(exchange, "allow");
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_right_is_denied_at_the_next_question_of_a_connected_client() {
    let app = app_with_broker_auth(5_000).await;
    let t = app.two_organizations().await;
    let a = &t.device_a;
    let own_up = format!("fleetmq/v1/org-a/{}/up/telemetry", a.id);
    assert_eq!(rabbitmq_topic(&app, &a.id, "write", &own_up).await, "allow");
    assert_eq!(
        rabbitmq_topic(&app, "alice", "read", "fleetmq/v1/org-a/#").await,
        "allow"
    );

    let deactivate = app
        .call(
            "POST",
            &format!("/api/v1/controller/device/{}/deactivate/", a.id),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(deactivate.status, 200, "{:?}", deactivate.body);
    assert_eq!(rabbitmq_topic(&app, &a.id, "write", &own_up).await, "deny");

    let organization = app
        .call(
            "PATCH",
            &format!("/api/v1/users/organization/{}/", t.org_a),
            Some(&app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(organization.status, 200, "{:?}", organization.body);
    assert_eq!(
        rabbitmq_topic(&app, "alice", "read", "fleetmq/v1/org-a/#").await,
        "deny"
    );
    let authz = emqx(
        &app,
        "authz",
        json!({"username": "alice", "clientid": "alice-console",
               "topic": "fleetmq/v1/org-a/#", "action": "subscribe"}),
    )
    .await;
    assert_eq!(authz["result"], "deny");
    app.shutdown().await;
}

#[tokio::test]
async fn emqx_gets_its_documented_answers_and_never_ignore() {
    let app = app_with_broker_auth(5_000).await;
    let t = app.two_organizations().await;
    let (a, b) = (&t.device_a, &t.device_b);
    let authn = |username: &str, password: &str, clientid: &str| {
        json!({"username": username, "password": password, "clientid": clientid,
               "peerhost": "127.0.0.1"})
    };
    let allowed = emqx(&app, "authn", authn(&a.id, &a.key, &a.id)).await;
    assert_eq!(allowed, json!({"result": "allow", "is_superuser": false}));
    let wrong = emqx(&app, "authn", authn(&a.id, &b.key, &a.id)).await;
    assert_eq!(wrong["result"], "deny");
    assert_eq!(
        emqx(&app, "authn", authn("alice", &t.manager_a, "console")).await["result"],
        "allow"
    );

    let authz = |username: &str, clientid: &str, topic: String, action: &str| {
        json!({"username": username, "clientid": clientid, "topic": topic,
               "action": action, "qos": "1", "retain": "false"})
    };
    let own_up = format!("fleetmq/v1/org-a/{}/up/telemetry", a.id);
    let cases = [
        (authz(&a.id, &a.id, own_up.clone(), "publish"), "allow"),
        (
            authz(&a.id, "other-client", own_up.clone(), "publish"),
            "deny",
        ),
        (authz(&b.id, &b.id, own_up.clone(), "publish"), "deny"),
        (
            authz(
                &a.id,
                &a.id,
                format!("fleetmq/v1/org-a/{}/down/#", a.id),
                "subscribe",
            ),
            "allow",
        ),
        (
            authz("alice", "console", "fleetmq/v1/org-a/#".into(), "subscribe"),
            "allow",
        ),
        (
            authz(
                "alice",
                "console",
                "fleetmq/v1/+/+/up/#".into(),
                "subscribe",
            ),
            "deny",
        ),
        (authz("alice", "console", "#".into(), "subscribe"), "deny"),
        (authz("alice", "console", own_up.clone(), "retain"), "deny"),
    ];
    for (body, expected) in cases {
        assert_eq!(
            emqx(&app, "authz", body.clone()).await["result"],
            expected,
            "{body}"
        );
    }
    // A body without the fields fleetmq's template sends is denied, not ignored.
    assert_eq!(
        emqx(&app, "authz", json!({"topic": "x"})).await["result"],
        "deny"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_service_needs_its_secret_and_answers_within_its_rate() {
    let app = app_with_broker_auth(3).await;
    let t = app.two_organizations().await;
    let body = json!({"username": t.device_a.id, "password": t.device_a.key,
                      "clientid": t.device_a.id});
    let without = app
        .call("POST", "/broker-auth/emqx/authn", None, Some(body.clone()))
        .await;
    assert_eq!(without.status, 401);
    assert!(without.body["detail"].is_string(), "{:?}", without.body);
    let wrong = app
        .call(
            "POST",
            "/broker-auth/emqx/authn",
            Some("guess"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(wrong.status, 401);

    // Three a second: the bucket starts full, the fourth at once is refused.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = app
            .call(
                "POST",
                "/broker-auth/emqx/authn",
                Some(SECRET),
                Some(body.clone()),
            )
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses[..3], [200, 200, 200]);
    assert_eq!(statuses[3], 429);

    let metrics = app.metrics().await;
    for line in [
        "fleetmq_broker_auth_answers_total{result=\"allow\"} 3",
        "fleetmq_broker_auth_refused_total{reason=\"secret\"} 2",
        "fleetmq_broker_auth_refused_total{reason=\"rate\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    app.shutdown().await;

    // Without a secret configured the routes do not exist.
    let plain = TestApp::spawn().await;
    let reply = plain
        .call("POST", "/broker-auth/emqx/authn", Some(SECRET), Some(body))
        .await;
    assert_eq!(reply.status, 404);
    plain.shutdown().await;
}

#[tokio::test]
async fn the_bridge_reads_and_publishes_the_fleet_tree_and_nobody_takes_its_name() {
    let app = app_with_broker_auth(5_000).await;
    let t = app.two_organizations().await;
    let (user, password) = BRIDGE;
    let login = |password: &str| json!({"username": user, "password": password, "clientid": "fleetmq-bridge"});
    assert_eq!(
        emqx(&app, "authn", login(password)).await["result"],
        "allow"
    );
    assert_eq!(emqx(&app, "authn", login("wrong")).await["result"], "deny");

    // An API user who happens to have the bridge's name cannot log in as it with a token.
    let token = app.create_user(user, &["Operator"], &[&t.org_a]).await;
    assert_eq!(emqx(&app, "authn", login(&token)).await["result"], "deny");

    let down = format!("fleetmq/v1/org-b/{}/down/command/request", t.device_b.id);
    for (topic, action, expected) in [
        ("fleetmq/v1/+/+/up/#", "subscribe", "allow"),
        (down.as_str(), "publish", "allow"),
        ("#", "subscribe", "deny"),
        ("sandbox/x", "publish", "deny"),
        ("$SYS/#", "subscribe", "deny"),
    ] {
        let body = json!({"username": user, "clientid": "fleetmq-bridge", "topic": topic,
                          "action": action});
        assert_eq!(
            emqx(&app, "authz", body).await["result"],
            expected,
            "{action} {topic}"
        );
    }
    assert_eq!(
        rabbitmq_topic(&app, user, "read", "fleetmq/v1/+/+/up/#").await,
        "allow"
    );
    app.shutdown().await;
}
